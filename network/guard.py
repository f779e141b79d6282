"""A pure ASGI guard in front of the relay and the bridge: each route's body is bounded by what that route
needs, and a JSON body by its nesting depth, refused before any framework reads or parses it.

Why depth: py_ecc (imported through eth-account) raises Python's recursion limit to 100,000, so
``json.loads`` of a body nested 75,000 levels deep overflowed the C stack and killed the whole process with
one unauthenticated request. No valid request nests past about ten levels.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.protocol.task import max_nesting

MAX_JSON_DEPTH = 64
INLINE_SCAN_BYTES = 256 * 1024
SMALL_BODY_BYTES = 64 * 1024  # a route that takes no upload: its body is a few fields at most
Refusal = Callable[[int, str], bytes]  # (status, message) -> the JSON body of the service's error shape


@dataclass(frozen=True)
class RouteLimit:
    method: str
    path: re.Pattern[str]  # matched in full against the request path
    max_bytes: int


class _Refused(Exception):
    pass


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[RouteLimit],
        refusal: Refusal,
        default_max_bytes: int = SMALL_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
    ):
        self.app, self.routes, self.refusal = app, routes, refusal
        self.default_max_bytes, self.max_depth = default_max_bytes, max_depth

    def max_bytes_for(self, method: str, path: str) -> int:
        for route in self.routes:
            if route.method == method and route.path.fullmatch(path):
                return route.max_bytes
        return self.default_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes_for(scope["method"], scope["path"])
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            await self._refuse(send, 413, f"request body is larger than the limit of {max_bytes} bytes here")
            return
        content_type = headers.get(b"content-type")
        if content_type is None or b"json" in content_type:  # FastAPI reads a body of no type as JSON
            await self._json(scope, receive, send, max_bytes)
        else:
            await self._streamed(scope, receive, send, max_bytes)

    async def _json(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        """A JSON body is read whole (bounded), its depth checked, then handed on as it came."""
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
        text = body.decode("utf-8", errors="replace")
        # an argument upload may be megabytes: its scan (tens of ms) goes to a thread, off the loop that
        # serves every download
        depth = (
            max_nesting(text)
            if len(body) <= INLINE_SCAN_BYTES
            else await asyncio.to_thread(max_nesting, text)
        )
        if depth > self.max_depth:
            await self._refuse(
                send, 400, f"the JSON body nests {depth} levels deep; the limit is {self.max_depth}"
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only a disconnect can come
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, max_bytes: int) -> None:
        """Any other body streams through, counted: past the limit (a chunked body that declared no
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

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        with contextlib.suppress(_Refused):
            await self.app(scope, counted, guarded_send)

    async def _refuse(self, send: Send, status: int, message: str) -> None:
        payload = self.refusal(status, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
