"""The one parse of a JSON request body, with its limits inside it, and the route class that hands the
parsed value to FastAPI (which would otherwise parse the body a second time, by its own rules).

Why here: py_ecc (imported through eth-account) raises Python's recursion limit to 100,000, so
``json.loads`` of a body nested 75,000 levels deep overflows the C stack and kills the process. A check
beside the parser fails the moment the two read the body differently (its media type, its encoding);
so the text checked is the text parsed, decoded once as ``json.loads`` decodes bytes (UTF-8, -16 or -32,
with or without a BOM).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from cluster.protocol.task import nesting_past

MAX_JSON_DEPTH = 64  # no valid request nests past about ten levels
PARSED_JSON_SCOPE_KEY = "helium.parsed_json"  # the parsed body, set by RequestLimits
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonBodyRefused(ValueError):
    """A body that is no JSON this service takes; the message names the reason (a 400)."""


def parse_json_body(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The body's JSON value, or ``JsonBodyRefused``: undecodable text, nesting past ``max_depth``, bad
    JSON, NaN or Infinity, or a lone surrogate in a string (no UTF-8 text holds one, so no reply or hash
    could carry it)."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # exactly as json.loads(bytes)
    except UnicodeDecodeError as exc:
        raise JsonBodyRefused(f"the body is not UTF-8, UTF-16 or UTF-32 text: {exc.reason}") from None
    depth = nesting_past(text, max_depth)  # brackets outside strings: never below the parser's recursion
    if depth is not None:
        raise JsonBodyRefused(f"the JSON body nests {depth} levels deep; the limit is {max_depth}")
    try:
        value = json.loads(text, parse_constant=_not_a_number)
    except ValueError as exc:  # JSONDecodeError, NaN, or an integer past Python's digit limit
        raise JsonBodyRefused(f"the body is not valid JSON: {exc}") from None
    where = _lone_surrogate(value)
    if where is not None:
        raise JsonBodyRefused(f"{where or 'body'}: not UTF-8 text (a lone surrogate)")
    return value


def _not_a_number(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON number")


def _lone_surrogate(value: Any) -> str | None:
    """The dotted place of the first string (or key) holding a lone surrogate; None when there is none.
    Walked with a stack: the depth is bounded already, but a walk needs no recursion at all."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):  # an ASCII test is free; a search is not
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                place = f"{where}.{key}" if where else key
                if not key.isascii() and _SURROGATE.search(key):
                    return where or "body"
                stack.append((place, child))
        elif isinstance(item, list):
            stack.extend((f"{where}.{i}" if where else str(i), child) for i, child in enumerate(item))
    return None


class ParsedJsonRequest(Request):
    """A request whose JSON body RequestLimits parsed: ``json()`` is that value. Without it (the app
    served without RequestLimits) the body is refused rather than parsed unchecked."""

    async def json(self) -> Any:
        if PARSED_JSON_SCOPE_KEY not in self.scope:
            raise RuntimeError("the JSON body was not parsed by RequestLimits: serve the app behind it")
        return self.scope[PARSED_JSON_SCOPE_KEY]


class ParsedJsonRoute(APIRoute):
    """FastAPI's documented hook for a custom Request: its endpoints read the body RequestLimits parsed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_parsed_body(request: Request) -> Response:
            return await handler(ParsedJsonRequest(request.scope, request.receive))

        return with_parsed_body
