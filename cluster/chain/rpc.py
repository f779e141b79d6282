"""A thin JSON-RPC layer over web3's async HTTP provider with one error taxonomy for the chain client.

The sender and the event reader talk raw JSON-RPC (hex in, hex out) instead of ``w3.eth``'s formatted
calls: they need the node's error ``code``/``message``/``data`` unchanged (revert data, "nonce too low",
"replacement transaction underpriced", "block range too large"), which web3 turns into a zoo of
exception types. Two outcomes matter to callers:

- ``TransientRpcError``: the request may not have reached the node, or its answer was lost (connection
  refused or reset, timeout, HTTP 5xx/429). Retrying a read is always safe; retrying a broadcast is
  safe only with the same signed bytes, which is what the sender does.
- ``RpcError``: the node answered with a JSON-RPC error. Never transient by itself; the caller decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from web3 import AsyncHTTPProvider, AsyncWeb3

log = logging.getLogger(__name__)
T = TypeVar("T")


class RpcError(Exception):
    """The node answered a JSON-RPC error. ``data`` is the raw error data (revert bytes as hex, or None)."""

    def __init__(self, method: str, code: int | None, message: str, data: Any = None):
        super().__init__(f"{method}: [{code}] {message}")
        self.method = method
        self.code = code
        self.message = message
        self.data = data

    def message_has(self, *phrases: str) -> bool:
        text = self.message.lower()
        return any(phrase in text for phrase in phrases)


class TransientRpcError(Exception):
    """The request failed in transport: nothing is known about whether the node acted on it."""


def connect(rpc_url: str, *, request_timeout_s: float = 10.0) -> AsyncWeb3:
    """An AsyncWeb3 for the chain client: web3's own retries are off because the client retries itself.

    Two retry layers would multiply attempts and hide the ``[sender] retry`` logs that show an RPC hop
    misbehaving.
    """
    provider = AsyncHTTPProvider(
        rpc_url,
        request_kwargs={"timeout": aiohttp.ClientTimeout(total=request_timeout_s)},
        exception_retry_configuration=None,
    )
    return AsyncWeb3(provider)


class RpcClient:
    """Raw JSON-RPC calls with ``RpcError``/``TransientRpcError`` and a bounded retry helper."""

    def __init__(self, w3: AsyncWeb3, *, max_attempts: int = 5, backoff_s: float = 0.2):
        if max_attempts < 1:
            raise ValueError(f"{max_attempts=} must be >= 1")
        self.w3 = w3
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s

    async def request(self, method: str, params: list[Any]) -> Any:
        """One attempt: the result, or ``RpcError`` / ``TransientRpcError``."""
        try:
            response = await self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        except aiohttp.ClientResponseError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise TransientRpcError(f"{method}: HTTP {exc.status}") from exc
            raise RpcError(method, exc.status, f"HTTP {exc.status} {exc.message}") from exc
        except (aiohttp.ClientError, TimeoutError, ConnectionError, OSError, ValueError) as exc:
            # ValueError: a response cut off mid-body does not decode as JSON; the node may have acted.
            raise TransientRpcError(f"{method}: {type(exc).__name__}: {exc}") from exc
        error = response.get("error")
        if error is not None:
            if isinstance(error, str):
                raise RpcError(method, None, error)
            raise RpcError(method, error.get("code"), str(error.get("message", "")), error.get("data"))
        return response.get("result")

    async def call(self, method: str, params: list[Any]) -> Any:
        """``request`` with retries of transport failures only: for reads and idempotent writes."""
        return await self.retrying(f"rpc {method}", lambda: self.request(method, params))

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it does not raise ``TransientRpcError``, with exponential backoff."""
        for number in range(1, self.max_attempts + 1):
            try:
                return await attempt()
            except TransientRpcError as exc:
                if number == self.max_attempts:
                    raise
                delay_s = self.backoff_s * 2 ** (number - 1)
                log.warning(
                    "[rpc] retry what=%s attempt=%d delay_s=%.2f error=%s", what, number, delay_s, exc
                )
                await asyncio.sleep(delay_s)
        raise AssertionError("unreachable")


def hex_int(value: str | int | None) -> int:
    """A JSON-RPC quantity ("0x1a") as an int; None (a field the node left out) as 0."""
    if value is None:
        return 0
    return value if isinstance(value, int) else int(value, 16)
