"""A blocking facade over ``TxSender`` for code outside asyncio: deploy scripts, the devnet launcher, tests.

The coordinator (an asyncio Ray actor) uses ``TxSender`` directly. Here one private event loop in a daemon
thread owns the sender, so nonce locks and HTTP sessions stay on the loop that created them, and any
number of caller threads may block on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount

from cluster.chain.rpc import connect
from cluster.chain.sender import TxSender
from cluster.chain.tx_journal import TxJournal
from cluster.chain.tx_types import SenderConfig, SentTx, TxRequest

T = TypeVar("T")


class SyncTxSender:
    def __init__(
        self,
        rpc_url: str,
        journal_path: str | Path,
        abis: Any = (),
        config: SenderConfig | None = None,
        *,
        request_timeout_s: float = 10.0,
    ):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tx-sender-loop", daemon=True)
        self._thread.start()
        w3 = connect(rpc_url, request_timeout_s=request_timeout_s)
        self.sender = TxSender(w3, TxJournal(journal_path), abis, config)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def send(self, account: LocalAccount, request: TxRequest, *, key: str) -> SentTx:
        """``TxSender.send``, blocking: same exactly-once guarantee, same exceptions."""
        return self._run(self.sender.send(account, request, key=key))

    def call(self, request: TxRequest, *, sender: str | None = None, block: str = "latest") -> str:
        return self._run(self.sender.call(request, sender=sender, block=block))

    def close(self) -> None:
        try:
            self._run(self.sender.aclose())
            self._run(self.sender.rpc.w3.provider.disconnect())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self.sender.journal.close()

    def __enter__(self) -> SyncTxSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
