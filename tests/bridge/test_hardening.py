"""Requests that used to crash, expose or hold the bridge, sent to ``python -m network.bridge`` in its own
process: a crash is observed, not suffered, and nothing it is asked can be paid for (its wallet is empty)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from hypothesis import strategies as st

from tests.bridge.bridge_process import MODEL_DIR, PROCESS_KEY, BridgeProcess
from tests.relay.deep_bodies import BYPASSES
from tests.relay.json_fuzz import no_json_request_breaks
from tests.relay.test_fuzz import TEXT

AUTH = {"authorization": f"Bearer {PROCESS_KEY}"}
JSON_ROUTES = ["/v1/chat/completions", "/v1/chat/tasks", "/v1/images/generations", "/v1/tasks"]


@pytest.mark.parametrize("bypass", BYPASSES)
def test_a_deep_body_that_got_past_the_old_check_is_refused_and_the_bridge_lives(bridge_process, bypass):
    """Sent to the bridge, the capitalized one took the whole devnet down (the bridge serves in its
    process). Each is refused by the body's one parse now."""
    headers, body, reason = BYPASSES[bypass]
    response = httpx.post(
        f"{bridge_process.url}/v1/chat/completions", content=body, headers=headers, timeout=60
    )
    assert response.status_code == 400 and reason in response.json()["error"]["message"]
    assert bridge_process.serving()


CHAT_FIELDS = st.fixed_dictionaries(
    {"model": st.sampled_from(["tiny-chat", "\ud800"]) | TEXT,
     "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}), max_size=3)},
    optional={"stream": st.booleans(), "prompt": TEXT, "task_type": st.sampled_from(["gpt", "sd"])},
)  # fmt: skip


def test_no_json_body_of_any_type_encoding_or_depth_breaks_the_bridge(bridge_process):
    answered = no_json_request_breaks(bridge_process.url, JSON_ROUTES, CHAT_FIELDS, examples=80)
    assert bridge_process.serving()
    assert len(answered) >= 80 and {400, 415} <= set(answered)


def _exchange(conn: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on an open keep-alive connection; its status and body (framed by Content-Length)."""
    head = f"{method} {path} HTTP/1.1\r\nhost: bridge\r\nauthorization: Bearer {PROCESS_KEY}\r\n"
    head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    conn.sendall(head.encode() + body)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        assert chunk, f"the bridge closed the connection after {method} {path}"
        received += chunk
    header_block, rest = received.split(b"\r\n\r\n", 1)
    lines = header_block.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (line.partition(": ") for line in lines[1:]) if k.lower() == "content-length"
    )
    while len(rest) < length:
        chunk = conn.recv(65536)
        assert chunk, "the bridge closed the connection mid-answer"
        rest += chunk
    return int(lines[0].split()[1]), rest


def test_lone_surrogates_are_400s_and_the_connection_is_kept(bridge_process):
    """A lone surrogate in a message (completions, streamed, /v1/chat/tasks) or in the model id (whose
    404 could not be encoded) was a 500 that also dropped the keep-alive connection."""
    lone_content = b'{"model": "tiny-chat", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
    streamed = b'{"model": "tiny-chat", "stream": true, "messages": [{"role": "user", "content": "\\udfff"}]}'
    lone_model = b'{"model": "tiny-\\ud800", "messages": [{"role": "user", "content": "hi"}]}'
    with socket.create_connection(("127.0.0.1", bridge_process.port), timeout=60) as conn:
        for path, body in [
            ("/v1/chat/completions", lone_content),
            ("/v1/chat/completions", streamed),
            ("/v1/chat/tasks", lone_content),
            ("/v1/chat/completions", lone_model),
        ]:
            status, answer = _exchange(conn, "POST", path, body)
            assert status == 400, (path, answer)
            assert "surrogate" in json.loads(answer)["error"]["message"]
        status, answer = _exchange(conn, "GET", "/v1/models")  # the same connection still serves
        assert status == 200 and json.loads(answer)["data"][0]["id"] == "tiny-chat"


def test_models_are_listed_by_name_never_by_where_they_are(bridge_process):
    models = httpx.get(f"{bridge_process.url}/v1/models", headers=AUTH).json()["data"]
    assert [m["id"] for m in models] == ["tiny-chat"]
    assert "path" not in models[0] and MODEL_DIR not in json.dumps(models)


def _closed_with(conn: socket.socket) -> bytes:
    """What the server sent before it closed the connection (waits for the close)."""
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def test_slow_requests_are_closed(anvil, deployment, tmp_path):
    """1,050 requests sent slowly were all still open after 40 s: each holds a file descriptor in the
    process that also runs the devnet's Ray driver. Headers and bodies have deadlines now."""
    limits = {"header_timeout_s": 1, "body_timeout_s": 1, "max_connections_per_client": 200}
    with BridgeProcess(anvil.rpc_url, deployment, tmp_path, connection_limits=limits) as bridge:
        start = b"POST /v1/chat/completions HTTP/1.1\r\nhost: bridge\r\n"
        starts = {"silent": b"", "half headers": start, "half body": start + b"content-length: 1000\r\n\r\n{"}
        held = [
            (what, socket.create_connection(("127.0.0.1", bridge.port), timeout=60))
            for what in [*starts] * 10
        ]
        for what, conn in held:
            conn.sendall(starts[what])
        for what, conn in held:  # each closed by the server (a socket timeout here would be a failure)
            answer = _closed_with(conn)
            assert answer.startswith(b"HTTP/1.1 408"), (what, answer)
            conn.close()
        assert bridge.serving()


def test_one_client_holds_a_bounded_number_of_connections(anvil, deployment, tmp_path):
    limits = {"max_connections_per_client": 3, "header_timeout_s": 600}
    with BridgeProcess(anvil.rpc_url, deployment, tmp_path, connection_limits=limits) as bridge:
        held = [socket.create_connection(("127.0.0.1", bridge.port), timeout=60) for _ in range(3)]
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=60) as fourth:
            answer = _closed_with(fourth)
        assert answer.startswith(b"HTTP/1.1 429") and b"limit per client" in answer
        held.pop().close()
        # the server counts the close when it reads it: ask until it has (a 429 before, a 200 after)
        for _ in range(200):
            try:
                if httpx.get(f"{bridge.url}/v1/models", headers=AUTH).status_code == 200:
                    break
            except httpx.TransportError:  # refused and closed while the request was still being sent
                pass
            time.sleep(0.05)
        else:
            raise AssertionError("a connection closed by the client never freed its place")
        for conn in held:
            conn.close()
