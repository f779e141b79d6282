"""Waiting for many transactions' receipts with one request per block.

A farm has hundreds of transactions in flight. Polling each one's receipt every interval cost the chain
node five calls per transaction; here one loop, running while anyone waits, asks for the head every
interval and fetches each new block's receipts in one call (``eth_getBlockReceipts``), handing every
waiter its receipt. A waiter asks for its own receipt once when it starts, since its transaction may
have been mined before the loop looks; it asks only once the loop's first block is fixed, so that every
block is either before its check or watched. A transaction the sender ``expect``s before it broadcasts
it needs no such check: its block comes after the loop's first one, and the loop reads it with the
waiter already there (this halves the farm's RPC calls: one receipt request per transaction was half of
them). Nodes without ``eth_getBlockReceipts`` are asked per waiting transaction instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from cluster.chain.rpc import RpcClient, RpcError, TransientRpcError, hex_int

log = logging.getLogger(__name__)


class ReceiptWatcher:
    def __init__(self, rpc: RpcClient, *, poll_interval_s: float):
        self.rpc = rpc
        self.poll_interval_s = poll_interval_s
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._expected: set[str] = set()  # waited for since before their broadcast (``expect``)
        self._next_block: int | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._has_block_receipts = True

    async def receipt_of(self, tx_hashes: Sequence[str]) -> dict[str, Any] | None:
        """The receipt of whichever of ``tx_hashes`` is mined now (at most one can be), asked directly."""
        for tx_hash in tx_hashes:
            receipt = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return receipt
        return None

    async def expect(self, tx_hash: str) -> None:
        """Watch for ``tx_hash`` from now on: called before its first broadcast, so that the block it is
        mined in is one the loop reads with its waiter there, and ``wait`` asks for nothing else. (Signed
        bytes broadcast before, by an earlier process, are waited for without ``expect``.) ``forget`` it
        if the broadcast fails."""
        self._waiting[tx_hash] = asyncio.get_running_loop().create_future()
        self._expected.add(tx_hash)
        self._ensure_watching()
        await self._fix_first_block()

    def forget(self, tx_hash: str) -> None:
        """An expected transaction that was not broadcast after all."""
        if tx_hash in self._expected:
            self._expected.discard(tx_hash)
            self._waiting.pop(tx_hash, None)

    async def wait(self, tx_hashes: Sequence[str], timeout_s: float) -> dict[str, Any] | None:
        """The receipt of one of ``tx_hashes`` once mined; None after ``timeout_s``."""
        if len(tx_hashes) == 1 and tx_hashes[0] in self._expected and tx_hashes[0] in self._waiting:
            return await self._wait_expected(tx_hashes[0], timeout_s)
        found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        for tx_hash in tx_hashes:
            self._expected.discard(tx_hash)
            self._waiting[tx_hash] = found
        try:
            self._ensure_watching()
            # Fix where the loop starts *before* the direct check: a block mined between the check and
            # a later head read would otherwise be neither checked nor watched (missed: a 60 s wait).
            await self._fix_first_block()
            receipt = await self.receipt_of(tx_hashes)  # mined before the loop looks: one direct check
            if receipt is not None:
                return receipt
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(found), timeout_s)
            return None
        finally:
            for tx_hash in tx_hashes:
                if self._waiting.get(tx_hash) is found:
                    del self._waiting[tx_hash]

    async def _wait_expected(self, tx_hash: str, timeout_s: float) -> dict[str, Any] | None:
        found = self._waiting[tx_hash]
        try:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(found), timeout_s)
            return await self.receipt_of([tx_hash])  # not seen by the loop: asked once, directly
        finally:
            self._expected.discard(tx_hash)
            if self._waiting.get(tx_hash) is found:
                del self._waiting[tx_hash]

    async def _fix_first_block(self) -> None:
        """The loop's first block, fixed now if it is not yet: every later block is read by the loop."""
        if self._next_block is None:
            head = hex_int(await self.rpc.call("eth_blockNumber", []))
            if self._next_block is None:
                self._next_block = head

    def tasks(self) -> list[asyncio.Task[None]]:
        """The watch loop, while it runs."""
        return [self._loop_task] if self._loop_task is not None and not self._loop_task.done() else []

    def _ensure_watching(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._watch(), name="receipt-watcher")

    async def _watch(self) -> None:
        try:
            while self._waiting:
                try:
                    await self._deliver_new_blocks()
                except (RpcError, TransientRpcError) as exc:  # the next round asks again
                    log.warning("[receipts] watch failed: %s", exc)
                await asyncio.sleep(self.poll_interval_s)
        finally:
            self._next_block = None  # the next waiter starts from the head again

    async def _deliver_new_blocks(self) -> None:
        head = hex_int(await self.rpc.call("eth_blockNumber", []))
        if self._next_block is None:
            self._next_block = head  # earlier blocks: each waiter's own first check covers them
        if not self._has_block_receipts:
            await self._deliver_one_by_one()
            self._next_block = head + 1
            return
        while self._next_block <= head and self._waiting:
            try:
                receipts = await self.rpc.call("eth_getBlockReceipts", [hex(self._next_block)])
            except RpcError as exc:
                log.info("[receipts] no eth_getBlockReceipts on this node (%s): asking per transaction", exc)
                self._has_block_receipts = False
                return
            for receipt in receipts or []:
                self._hand_over(receipt)
            self._next_block += 1

    async def _deliver_one_by_one(self) -> None:
        for tx_hash in list(self._waiting):
            receipt = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                self._hand_over(receipt)

    def _hand_over(self, receipt: dict[str, Any]) -> None:
        waiter = self._waiting.get(receipt["transactionHash"])
        if waiter is not None and not waiter.done():
            waiter.set_result(receipt)
