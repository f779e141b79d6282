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
import itertools
import json
import logging
from collections import Counter
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

    def __reduce__(self) -> tuple[Any, ...]:  # whole across processes (a round driver's send)
        return (type(self), (self.method, self.code, self.message, self.data))

    def message_has(self, *phrases: str) -> bool:
        text = self.message.lower()
        return any(phrase in text for phrase in phrases)


class TransientRpcError(Exception):
    """The request failed in transport: nothing is known about whether the node acted on it."""


JSON_HEADERS = {"Content-Type": "application/json"}
# Connections one process keeps open to its RPC node: a farm's rounds call it concurrently.
MAX_RPC_CONNECTIONS = 64


class KeepAliveHTTPProvider(AsyncHTTPProvider):
    """web3's async HTTP provider, posting over a kept-alive session of its own.

    NOTE: two things of web3 8's own request path are avoided. Its default session has a ``force_close``
    connector: a new TCP connection (and a thread for its address lookup) for every call, which cost a
    coordinator more CPU than its rounds' logic. And every call takes a lock that all of web3's session
    managers in the process share, acquired in a thread: a call cancelled while it waits leaves the lock
    taken, and every web3 provider of the process, sync or async, then waits forever.
    """

    def __init__(self, endpoint_uri: str, *, request_timeout_s: float):
        self.request_timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        super().__init__(
            endpoint_uri, request_kwargs={"timeout": self.request_timeout}, exception_retry_configuration=None
        )
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def session(self) -> aiohttp.ClientSession:
        """This event loop's session (created on first use)."""
        loop_id = id(asyncio.get_running_loop())
        session = self._sessions.get(loop_id)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_RPC_CONNECTIONS, keepalive_timeout=30)
            session = self._sessions[loop_id] = aiohttp.ClientSession(connector=connector)
        return session

    async def _make_request(self, method: Any, request_data: bytes) -> bytes:
        session = await self.session()
        async with session.post(
            str(self.endpoint_uri), data=request_data, headers=JSON_HEADERS, timeout=self.request_timeout
        ) as response:
            response.raise_for_status()
            return await response.read()

    async def disconnect(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def connect(rpc_url: str, *, request_timeout_s: float = 10.0) -> AsyncWeb3:
    """An AsyncWeb3 for the chain client: web3's own retries are off because the client retries itself.

    Two retry layers would multiply attempts and hide the ``[sender] retry`` logs that show an RPC hop
    misbehaving.
    """
    return AsyncWeb3(KeepAliveHTTPProvider(rpc_url, request_timeout_s=request_timeout_s))


class RpcClient:
    """Raw JSON-RPC calls with ``RpcError``/``TransientRpcError`` and a bounded retry helper."""

    def __init__(self, w3: AsyncWeb3, *, max_attempts: int = 5, backoff_s: float = 0.2):
        if max_attempts < 1:
            raise ValueError(f"{max_attempts=} must be >= 1")
        self.w3 = w3
        self.num_calls: Counter[str] = Counter()  # requests sent, by method: what a round costs the node
        self._ids = itertools.count(1)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s

    async def request(self, method: str, params: list[Any]) -> Any:
        """One attempt: the result, or ``RpcError`` / ``TransientRpcError``."""
        self.num_calls[method] += 1
        try:
            response = await self._post(method, params)
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

    async def _post(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The JSON-RPC answer: straight over the provider's kept-alive session (web3's own request path
        costs more CPU than the call), or through web3 for any other provider."""
        provider = self.w3.provider
        if not isinstance(provider, KeepAliveHTTPProvider):
            return await provider.make_request(method, params)  # type: ignore[arg-type]
        session = await provider.session()
        payload = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        async with session.post(
            provider.endpoint_uri, data=payload, headers=JSON_HEADERS, timeout=provider.request_timeout
        ) as response:
            response.raise_for_status()
            return json.loads(await response.read())

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
