"""A pure ASGI guard on request body size: refuses with 413 before the body is read into memory."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _refuse(send, self.max_bytes)
            return
        received = 0
        refused = False  # the 413 went out: whatever the app answers after is dropped

        async def counted_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if (
                    received > self.max_bytes and not refused
                ):  # a chunked body that did not declare its length
                    refused = True
                    await _refuse(send, self.max_bytes)
                    raise BodyTooLarge  # frameworks may catch this; the flag keeps their answer off the wire
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted_receive, guarded_send)


async def _refuse(send: Send, max_bytes: int) -> None:
    body: dict[str, Any] = {
        "message": f"request body is larger than the limit of {max_bytes} bytes",
        "data": None,
    }
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
