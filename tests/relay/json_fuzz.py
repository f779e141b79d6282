"""JSON requests as a client may dress them: the media type in any case, ``+json``, parameters, two
Content-Type headers or none; UTF-8, -16 or -32 with or without a BOM; nested up to a million levels, in
ways that hide brackets from a scan that reads the bytes as UTF-8. Shared by the relay's and the bridge's
fuzz tests, which send them to a server in its own process."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
DEPTHS = [1, 10, 64, 65, 1_000, 100_000, 1_000_000]
# what comes before the nesting: nothing, a key, a string whose UTF-16 bytes hold a quote (0x22), a key
# holding an escaped quote
PREFIXES = ["", '{"a":', '["\u2200",', '{"\\"[": [', '{"\u225b":[']
MEDIA_TYPES = [
    "application/json", "application/vnd.helium+json", "application/x+json", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx",
]  # fmt: skip
PARAMETERS = ["", "; charset=utf-8", "; charset=UTF-16", ";charset=latin-1", '; q="1"', "; boundary=--x"]
MAX_DEPTH = 64


@st.composite
def content_types(draw: st.DrawFn) -> list[str]:
    """Zero, one or two Content-Type values, each in a case of its own."""

    def one() -> str:
        text = draw(st.sampled_from(MEDIA_TYPES)) + draw(st.sampled_from(PARAMETERS))
        flips = draw(st.integers(0, 2**32))  # a bit per character: upper or lower case
        return "".join(c.upper() if flips >> (i % 32) & 1 else c.lower() for i, c in enumerate(text))

    return [one() for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2])))]


@st.composite
def json_texts(draw: st.DrawFn, fields: st.SearchStrategy[dict]) -> tuple[str, int]:
    """A JSON text (maybe cut short) and how deep it nests: a request's fields, or a deep nesting."""
    if draw(st.booleans()):
        return json.dumps(draw(fields), ensure_ascii=draw(st.booleans())), 3
    depth = draw(st.sampled_from(DEPTHS))
    opener = draw(st.sampled_from(["[", '{"a":']))
    prefix = draw(st.sampled_from(PREFIXES))
    closed = draw(st.booleans())
    closer = ("]" if opener == "[" else "}") * depth if closed else ""
    nested = prefix + opener * depth + ("1" if opener != "[" and closed else "") + closer
    return nested, depth + prefix.count("[") + prefix.count("{")


@st.composite
def json_requests(
    draw: st.DrawFn, fields: st.SearchStrategy[dict]
) -> tuple[list[tuple[str, str]], bytes, int]:
    text, depth = draw(json_texts(fields))
    body = text.encode(draw(st.sampled_from(ENCODINGS)), "surrogatepass")
    headers = [("content-type", value) for value in draw(content_types())]
    return headers, body, depth


def no_json_request_breaks(
    base_url: str, paths: list[str], fields: st.SearchStrategy[dict], *, examples: int
) -> list[int]:
    """Send ``examples`` generated requests to the ``paths``: each answered below 500, and a body nested
    past the limit never accepted. The statuses, for the caller to check the process after."""
    answered: list[int] = []
    http = httpx.Client(base_url=base_url, timeout=120)

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(paths), request=json_requests(fields))
    def check(path: str, request: tuple[list[tuple[str, str]], bytes, int]) -> None:
        headers, body, depth = request
        response = http.post(path, content=body, headers=headers)
        assert response.status_code < 500, (
            path,
            headers,
            body[:80],
            response.status_code,
            response.text[:300],
        )
        if depth > MAX_DEPTH:  # never accepted: refused as a body, or (a form route) for its unknown task
            refused = (400, 404, 413, 415)
            assert response.status_code in refused, (path, headers, body[:80], response.text[:300])
        answered.append(response.status_code)

    check()
    http.close()
    return answered
