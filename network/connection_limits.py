"""Limits on a public server's connections, below the app: how long a request may take to arrive, and how
many connections one client address may hold.

uvicorn closes an idle keep-alive connection but never a request that arrives slowly: a client sending a
header line every few seconds, or a body byte by byte, held its connection (and a file descriptor) for as
long as it liked, and 1,050 of them were all still open after 40 s. The ASGI app only sees a request once
its headers are complete, so these limits live in uvicorn's HTTP protocol (httptools), one level down.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ConnectionLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    header_timeout_s: float = Field(default=10.0, gt=0)  # from a request's first byte to its last header
    body_timeout_s: float = Field(default=60.0, gt=0)  # from its last header to its body's last byte
    idle_timeout_s: int = Field(default=5, ge=1)  # a keep-alive connection between requests (uvicorn's)
    # per client address: behind a reverse proxy every client shares the proxy's, so raise it there
    max_connections_per_client: int = Field(default=64, ge=1)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers and body, and a count of
    the open connections per client address. Made per server by ``limited_http_protocol``."""

    limits: ClassVar[ConnectionLimits]
    open_per_client: ClassVar[Counter[str]]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._address = self.client[0] if self.client else ""
        self.open_per_client[self._address] += 1
        most = self.limits.max_connections_per_client
        if self.open_per_client[self._address] > most:
            self._close_with(429, f"{self._address} holds {most} connections already, the limit per client")
            return
        self._arm(self.limits.header_timeout_s, "its headers")  # a connection that never sends a byte too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.open_per_client[self._address] -= 1
        if self.open_per_client[self._address] <= 0:
            del self.open_per_client[self._address]
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection: its first byte came
            self._arm(self.limits.header_timeout_s, "its headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_s, "its body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, timeout_s: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._timed_out, timeout_s, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self, timeout_s: float, what: str) -> None:
        self._deadline = None
        if self.cycle is None or not self.cycle.response_started:
            self._close_with(408, f"the request did not send {what} within {timeout_s:g} s")
        elif not self.transport.is_closing():
            self.transport.close()

    def _close_with(self, status: int, message: str) -> None:
        if self.transport.is_closing():
            return
        reason = {408: b"Request Timeout", 429: b"Too Many Requests"}[status]
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()


def limited_http_protocol(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class to pass to uvicorn (``http=``): its own limits and its own counts."""
    attributes: dict[str, Any] = {"limits": limits, "open_per_client": Counter()}
    return type("LimitedHttpProtocol", (LimitedHttpProtocol,), attributes)


def uvicorn_options(limits: ConnectionLimits) -> dict[str, Any]:
    """The uvicorn settings (``uvicorn.Config`` or ``uvicorn.run`` keywords) that apply ``limits``."""
    return {"http": limited_http_protocol(limits), "timeout_keep_alive": limits.idle_timeout_s}
