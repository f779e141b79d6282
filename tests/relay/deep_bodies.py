"""JSON bodies nested far past any parser's stack, dressed so that a check beside the parser reads them
differently from the parser: each one killed a relay (SIGSEGV) through the old body check."""

from __future__ import annotations

DEEP = 100_000  # levels: 75,000 and more overflowed the C stack (py_ecc raises the recursion limit)
HEADERS = list[tuple[str, str]]

# name -> (headers, body); each is refused with a 400 whose message holds the last item
BYPASSES: dict[str, tuple[HEADERS, bytes, str]] = {
    # FastAPI reads the media type in any case, and any application/*+json, as JSON
    "uppercase type": ([("content-type", "application/JSON")], b"[" * DEEP, "nests"),
    "plus json type": ([("content-type", "application/vnd.helium+JSON")], b"[" * DEEP, "nests"),
    # FastAPI reads the first Content-Type, the old check the last
    "two types": (
        [("content-type", "application/json"), ("content-type", "text/plain")],
        b"[" * DEEP,
        "Content-Type headers",
    ),
    # json.loads decodes UTF-16; read as UTF-8, the byte 0x22 inside U+2200 opens a "string" that hid
    # every bracket after it from the old scan
    "utf-16 body": (
        [("content-type", "application/json")],
        ('["\u2200",' + "[" * DEEP).encode("utf-16-le"),
        "nests",
    ),
}
