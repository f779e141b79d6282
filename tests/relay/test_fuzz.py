"""Whatever a client sends to any relay endpoint (random bodies, headers, path and query values, JSON
nested up to a million levels, sizes up to the limits, unicode edge cases), the relay process answers
below 500, stays alive with bounded memory, and stores nothing for a refused request."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.relay.json_fuzz import no_json_request_breaks

ROUTES = [
    ("POST", "/v1/inference_tasks"),
    ("GET", "/v1/inference_tasks/{a}"),
    ("POST", "/v1/inference_tasks/{a}/results"),
    ("GET", "/v1/inference_tasks/{a}/results/{b}"),
    ("GET", "/v1/network"),
    ("GET", "/v1/network/nodes"),
    ("GET", "/v1/relay"),
]
EDGE_TEXT = st.sampled_from([
    "", "0", "-1", "1.0", "true", "null", "2" * 40, "\u0000", "\ud800", "é" * 300, "%00", "../..",
    "0x" + "11" * 65, "\U0001f600", " ",
])  # fmt: skip
TEXT = st.text(max_size=40) | EDGE_TEXT
PATH_VALUE = st.integers(-(2**70), 2**70).map(str) | TEXT


def _segment(value: str) -> str:
    """Any text as one percent-encoded path segment (lone surrogates as their raw bytes)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="") or "0"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4),
    max_leaves=12,
)


CONTENT_TYPES = [None, "application/json", "text/plain", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "application/json; charset=latin-1"]  # fmt: skip
HEADER_VALUE = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40
)  # h11: no edge spaces


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes | None, str | None]:
    kind = draw(st.sampled_from(["none", "json", "deep", "bytes", "form"]))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if kind == "none":
        return None, content_type
    if kind == "json":
        return json.dumps(draw(JSON)).encode("utf-8", errors="surrogatepass"), content_type
    if kind == "deep":
        depth = draw(st.sampled_from([65, 1_000, 100_000, 1_000_000]))
        opener = draw(st.sampled_from(["[", '{"a":']))
        return (opener * depth).encode(), content_type
    if kind == "form":
        return b'--x\r\nContent-Disposition: form-data; name="files"; filename="0"\r\n\r\n' + draw(
            st.binary(max_size=2048)
        ) + b"\r\n--x--\r\n", "multipart/form-data; boundary=x"
    size = draw(st.sampled_from([1, 1024, 70_000, 3 * 1024 * 1024]))
    return draw(st.binary(min_size=1, max_size=64)) * (size // 64 + 1), content_type


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_no_request_makes_the_relay_answer_5xx_die_or_grow(relay_process):
    http = httpx.Client(base_url=relay_process.url, timeout=60)
    baseline = rss_mib(relay_process.pid)
    answered: list[int] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        route=st.sampled_from(ROUTES), a=PATH_VALUE, b=PATH_VALUE,
        query=st.dictionaries(st.sampled_from(["timestamp", "signature", "limit", "x"]), TEXT, max_size=3),
        headers=st.dictionaries(st.sampled_from(["x-test", "authorization"]), HEADER_VALUE, max_size=2),
        body=bodies(),
    )  # fmt: skip
    def check(route, a, b, query, headers, body):  # type: ignore[no-untyped-def]
        method, template = route
        content, content_type = body
        if content_type is not None:
            headers = {**headers, "content-type": content_type}
        path = template.format(a=_segment(a), b=_segment(b))
        raw_query = {k: v.encode("utf-8", "surrogatepass") for k, v in query.items()}
        url = f"{path}?{urlencode(raw_query)}" if raw_query else path
        response = http.request(method, url, content=content, headers=headers)
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
        answered.append(response.status_code)

    check()
    assert (
        relay_process.proc.poll() is None and relay_process.status()["next_block"] is not None
    )  # alive, and serving
    assert (
        rss_mib(relay_process.pid) < baseline + 512
    )  # bounded: a 3 MiB body is refused, never a copy per level
    files = relay_process.data_dir / "files"
    assert not files.exists() or not any(files.rglob("*")), "a refused request stored something"
    assert len(answered) >= 100 and min(answered) >= 200


ARGS_FIELDS = st.fixed_dictionaries(
    {"task_id": st.integers(0, 3), "task_args": TEXT, "timestamp": st.integers(0, 2**40), "signature": TEXT}
)


def test_no_json_body_of_any_type_encoding_or_depth_breaks_the_relay(relay_process):
    """Every route that reads JSON, sent bodies in every dress a client may choose (json_fuzz): each one
    answered below 500, a body nested past the limit never accepted, and the process alive after."""
    paths = ["/v1/inference_tasks", "/v1/inference_tasks/1/results"]
    answered = no_json_request_breaks(relay_process.url, paths, ARGS_FIELDS, examples=80)
    assert relay_process.proc.poll() is None and relay_process.status()["next_block"] is not None
    assert len(answered) >= 80 and {400, 415} <= set(answered)
