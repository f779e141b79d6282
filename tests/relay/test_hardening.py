"""Requests that used to crash or exhaust the relay, sent to a relay process (so that a crash is observed,
not suffered): refused with a 4xx, the process alive, nothing stored."""

from __future__ import annotations

import hashlib
import io
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from eth_account import Account
from PIL import Image

from cluster.protocol.phash import MAX_IMAGE_PIXELS, phash_bytes
from cluster.protocol.signing import bound_params, sign_request
from network.relay.process import RelayProcess
from network.relay.store import RelayStore
from tests.relay.deep_bodies import BYPASSES, DEEP
from tests.relay.proc_stats import bytes_written, peak_rss_bytes

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "reason"),
    [
        ("/v1/inference_tasks", "[" * DEEP + "]" * DEEP, "application/json", 400, "nests"),
        ("/v1/inference_tasks", '{"a":' * DEEP + "1" + "}" * DEEP, "application/json", 400, "nests"),
        ("/v1/inference_tasks", "[" * DEEP, None, 400, "nests"),  # no type: read as JSON too
        ("/v1/inference_tasks/1/results", "[" * 1_000, "application/json", 400, "nests"),
        # the results route takes a JSON body only as small as any route's (its large limit is multipart's)
        ("/v1/inference_tasks/1/results", "[" * DEEP, "application/json", 413, "limit"),
    ],
)
def test_a_deeply_nested_body_is_refused_and_the_relay_lives(
    relay_process, path, body, content_type, status, reason
):
    headers = {} if content_type is None else {"content-type": content_type}
    response = httpx.post(relay_process.url + path, content=body, headers=headers, timeout=60)
    assert response.status_code == status and reason in response.json()["message"]
    assert relay_process.proc.poll() is None and relay_process.status()["next_block"] is not None


@pytest.mark.parametrize("bypass", BYPASSES)
def test_a_deep_body_that_got_past_the_old_check_is_refused_and_the_relay_lives(relay_process, bypass):
    """Each of these, unauthenticated, killed a relay: the media type in capitals, a +json type, two
    Content-Type headers, a UTF-16 body. The body's one parse holds the depth limit now."""
    headers, body, reason = BYPASSES[bypass]
    response = httpx.post(
        relay_process.url + "/v1/inference_tasks", content=body, headers=headers, timeout=60
    )
    assert response.status_code == 400 and reason in response.json()["message"]
    assert relay_process.proc.poll() is None and relay_process.status()["next_block"] is not None


def test_a_content_type_no_route_takes_is_a_415(relay_process):
    for path in ("/v1/inference_tasks", "/v1/inference_tasks/1/results"):
        refused = httpx.post(relay_process.url + path, content=b"a=1", headers={"content-type": "text/plain"})
        assert refused.status_code == 415 and "application/json" in refused.json()["message"]
    form = httpx.post(relay_process.url + "/v1/inference_tasks", files={"files": b"x"})
    assert form.status_code == 415  # multipart only where results are uploaded


def test_each_route_takes_only_the_body_it_needs(relay_process):
    # a GET carries no upload: a 1 MiB body is refused before it is read, with or without a length
    big = b"x" * (1024 * 1024)
    refused = httpx.request("GET", relay_process.url + "/v1/network", content=big, timeout=60)
    assert refused.status_code == 413 and "limit" in refused.json()["message"]

    def chunks():
        yield from (big[i : i + 65536] for i in range(0, len(big), 65536))

    chunked = httpx.post(relay_process.url + "/v1/relay", content=chunks(), timeout=60)
    assert chunked.status_code == 413
    # the argument upload takes up to its own limit, far above a GET's
    accepted_size = httpx.post(
        relay_process.url + "/v1/inference_tasks", content=b'{"task_id": 1, "x": "' + big + b'"}', timeout=60,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert accepted_size.status_code == 400  # read and refused for its fields, not its size
    assert relay_process.proc.poll() is None


def test_an_image_is_refused_by_its_header_before_its_pixels_are_decoded():
    side = 6000  # 36 M pixels: a 34 KiB PNG that decodes to 1.5 GB
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 100_000 and side * side > MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="pixels"):
        phash_bytes(buffer.getvalue())


# -- what a refused body costs the relay: counters of a relay of its own, read before and after -------------

NODE, STRANGER = Account.create(), Account.create()
RESULT = b'{"choices": []}'


@pytest.fixture(scope="module")
def quiet_relay(anvil, tmp_path_factory):
    """A relay process that only these tests use, with task 7 validated on its books (written into its
    database, as its follower would), so that a results upload gets as far as its signature."""
    data_dir = tmp_path_factory.mktemp("quiet-relay")
    with RelayProcess(rpc_url=anvil.rpc_url, task_address="0x" + "12" * 20, data_dir=data_dir) as running:
        books = RelayStore(f"sqlite:///{data_dir / 'relay.db'}")
        books.saw_task(7, 1, STRANGER.address, b"\x07" * 32)
        books.saw_selection(7, 0, NODE.address)
        books.saw_success(7, hashlib.sha256(RESULT).digest(), NODE.address)
        books.close()
        yield running


def test_a_large_json_body_gets_the_json_limit_on_the_results_route(quiet_relay):
    """The route's 512 MiB is for multipart uploads: a 200 MB JSON body there used to be read whole and
    scanned (relay memory 140 -> 739 MiB) before its 400."""
    size = 200 * MiB
    chunk = b" " * MiB

    def body():
        yield b'{"a": "'
        yield from (chunk for _ in range(size // MiB))
        yield b'"}'

    url = quiet_relay.url + "/v1/inference_tasks/7/results"
    peak_before = peak_rss_bytes(quiet_relay.pid)
    streamed = httpx.post(url, content=body(), headers={"content-type": "application/json"}, timeout=120)
    assert streamed.status_code == 413 and "limit" in streamed.json()["message"]
    declared = httpx.post(
        url, content=body(), timeout=120,
        headers={"content-type": "application/json", "content-length": str(size + 9)},
    )  # fmt: skip
    assert declared.status_code == 413
    assert peak_rss_bytes(quiet_relay.pid) - peak_before < 32 * MiB


def _multipart(fields: dict[str, str], num_files: int, file_bytes: int) -> tuple[dict[str, str], object]:
    """Headers and a streamed body: the fields, then ``num_files`` files of zeros made as they are sent."""
    boundary = "helium-results-boundary"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="f"\r\n\r\n'.encode()
    tail = f"--{boundary}--\r\n".encode()
    chunk = b"\0" * MiB

    def body():
        yield head
        for _ in range(num_files):
            yield part
            yield from (chunk for _ in range(file_bytes // MiB))
            yield b"\r\n"
        yield tail

    length = len(head) + num_files * (len(part) + file_bytes + 2) + len(tail)
    headers = {"content-type": f"multipart/form-data; boundary={boundary}", "content-length": str(length)}
    return headers, body()


def test_a_results_upload_with_a_bad_signature_is_refused_before_its_files_are_read(quiet_relay):
    """Three concurrent 448 MiB uploads whose signatures are no good used to raise the relay's memory by
    1.2 GiB and its temporary disk by 2.1 GB, then get their 401 after 17 s: the body was read whole
    before the signature was looked at. The fields come first now, and are checked at the first file."""
    num_files, file_bytes = 14, 32 * MiB  # 448 MiB, each file at the relay's limit per file
    declared = [hashlib.sha256(b"\0" * file_bytes).hexdigest()] * num_files
    path = "/v1/inference_tasks/7/results"
    params = bound_params("POST", path, {"task_id": 7}, files_sha256=declared)
    now = int(time.time())
    signatures = {
        "garbage": (now, "0x" + "ab" * 65),
        "a stranger's": sign_request(params, STRANGER.key, now),
        "stale": sign_request(params, NODE.key, now - 3600),
    }
    uploads = [
        _multipart(
            {"timestamp": str(ts), "signature": sig, "files_sha256": ",".join(declared)},
            num_files,
            file_bytes,
        )
        for ts, sig in signatures.values()
    ]
    pid = quiet_relay.pid
    peak_before, written_before = peak_rss_bytes(pid), bytes_written(pid)

    def send(upload: tuple[dict[str, str], object]) -> httpx.Response:
        headers, body = upload
        return httpx.post(quiet_relay.url + path, content=body, headers=headers, timeout=300)

    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(send, uploads))
    assert [a.status_code for a in answers] == [401, 403, 401], [a.text for a in answers]
    assert all("result node" in a.json()["message"] for a in answers)
    assert peak_rss_bytes(pid) - peak_before < 32 * MiB  # memory flat
    assert bytes_written(pid) - written_before < 4 * MiB  # nothing spooled: a few replies, log lines
    staged = [p for p in (quiet_relay.data_dir / "files").rglob("*") if p.is_file()]
    assert staged == [] and quiet_relay.proc.poll() is None
