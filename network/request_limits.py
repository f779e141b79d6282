"""A pure ASGI layer in front of the relay and the bridge: what a request body may be, checked before any
framework reads it.

- One ``Content-Type`` at most (two are refused: frameworks differ on which one counts), and only the
  media types the route takes: JSON everywhere (no type counts as JSON), ``multipart/form-data`` only on
  a route that declares a multipart limit; any other body is a 415.
- A JSON body is read whole up to the route's JSON limit and parsed here, once (``network.json_body``):
  the app gets the parsed value, never a second parse. A multipart body streams through, counted against
  the route's multipart limit; past it the 413 goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from network.json_body import MAX_JSON_DEPTH, PARSED_JSON_SCOPE_KEY, JsonBodyRefused, parse_json_body

INLINE_PARSE_BYTES = 256 * 1024  # a larger body is parsed in a thread, off the loop that serves the rest
SMALL_BODY_BYTES = 64 * 1024  # a route that takes no upload: its body is a few fields at most
Refusal = Callable[[int, str], bytes]  # (status, message) -> the JSON body of the service's error shape


@dataclass(frozen=True)
class RouteLimit:
    method: str
    path: re.Pattern[str]  # matched in full against the request path
    max_json_bytes: int = SMALL_BODY_BYTES
    max_multipart_bytes: int | None = None  # None: the route takes no multipart body


ANY_ROUTE = RouteLimit("*", re.compile(".*"))  # a route not listed: a small JSON body at most


class _Refused(Exception):
    pass


class RequestLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[RouteLimit],
        refusal: Refusal,
        max_depth: int = MAX_JSON_DEPTH,
    ):
        self.app, self.routes, self.refusal, self.max_depth = app, routes, refusal, max_depth

    def route_for(self, method: str, path: str) -> RouteLimit:
        for route in self.routes:
            if route.method == method and route.path.fullmatch(path):
                return route
        return ANY_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_for(scope["method"], scope["path"])
        content_types = [value for name, value in scope["headers"] if name == b"content-type"]
        if len(content_types) > 1:
            await self._refuse(send, 400, f"{len(content_types)} Content-Type headers; send one")
            return
        media = media_type(content_types[0]) if content_types else None
        lengths = [value for name, value in scope["headers"] if name == b"content-length"]
        if media is None or media == "application/json" or media.endswith("+json"):
            await self._json(scope, receive, send, route.max_json_bytes, lengths)
        elif media == "multipart/form-data" and route.max_multipart_bytes is not None:
            if await self._declared_over(send, lengths, route.max_multipart_bytes):
                return
            await self._streamed(scope, receive, send, route.max_multipart_bytes)
        elif lengths == [b"0"] or (not lengths and not _chunked(scope)):
            await self.app(scope, receive, send)  # a type, but no body to read
        else:
            takes = "application/json" + (", multipart/form-data" if route.max_multipart_bytes else "")
            await self._refuse(send, 415, f"Content-Type {media!r} is not accepted here; send {takes}")

    async def _declared_over(self, send: Send, lengths: list[bytes], max_bytes: int) -> bool:
        """A declared length over the limit (or not a number) is refused before a byte is read."""
        if any(not value.isdigit() or int(value) > max_bytes for value in lengths):
            await self._refuse(send, 413, f"request body is larger than the limit of {max_bytes} bytes here")
            return True
        return False

    async def _json(
        self, scope: Scope, receive: Receive, send: Send, max_bytes: int, lengths: list[bytes]
    ) -> None:
        """Read whole (bounded), parse once, hand on the parsed value with the body as it came."""
        if await self._declared_over(send, lengths, max_bytes):
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                await self._refuse(
                    send, 413, f"request body is larger than the limit of {max_bytes} bytes here"
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                value = (
                    parse_json_body(body, self.max_depth)
                    if len(body) <= INLINE_PARSE_BYTES
                    else await asyncio.to_thread(parse_json_body, body, self.max_depth)
                )
            except JsonBodyRefused as exc:
                await self._refuse(send, 400, str(exc))
                return
            # one type the framework reads as JSON, whatever case, suffix or absence the client sent
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
            scope[PARSED_JSON_SCOPE_KEY] = value
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        """A multipart body streams through, counted: past the limit (a chunked body that declared no
        length) the 413 goes out and whatever the app answers after is dropped."""
        received, refused = 0, False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes and not refused:
                    refused = True
                    await self._refuse(
                        send, 413, f"request body is larger than the limit of {max_bytes} bytes here"
                    )
                    raise _Refused  # frameworks may catch this; the flag keeps their answer off the wire
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        with contextlib.suppress(_Refused):
            await self.app(scope, counted, send_unless_refused)

    async def _refuse(self, send: Send, status: int, message: str) -> None:
        payload = self.refusal(status, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def media_type(content_type: bytes) -> str:
    """``Application/Foo+JSON; charset=x`` -> ``application/foo+json``."""
    return content_type.split(b";", 1)[0].strip().decode("latin-1").lower()


def _chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])
