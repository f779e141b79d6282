"""Keeps the ledger up with the chain and the journal: one call at the coordinator's polls.

The ledger follows its own events with its own cursor (``ledger`` in the coordinator's ``cursor.db``),
asking the chain for its four topics only, in a task of its own beside the coordinator's loop: it never
holds back the rounds (a farm that ran before the ledger existed gets its whole history counted from
its start block, which may take a while), and a ledger that fails (a bug, a full disk) leaves the rounds
running and catches up once it works again. Receipts are counted
once the ledger's reader has passed their block: their day is their block's time, which the events the
coordinator applies carry (``note_block_times``); a block no event named (a bring-up's transfers) is
read once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from itertools import takewhile
from pathlib import Path
from typing import Any

from web3 import AsyncWeb3

from cluster.chain.artifacts import load_artifact
from cluster.chain.events import ChainEvent, CursorStore, EventDecoder, EventReader, event_topic
from cluster.chain.rpc import hex_int
from cluster.chain.tx_journal import TxJournal
from cluster.ledger.entries import EVENT_KINDS, event_entries, receipt_entries
from cluster.ledger.model import OPERATOR_CARD, LedgerTotals
from cluster.ledger.store import LedgerStore
from cluster.protocol.cards import CardModel

log = logging.getLogger(__name__)
CURSOR_NAME = "ledger"
FOLLOW_INTERVAL_S = 5.0  # accounting may lag a few seconds; the rounds' poll need not pay its calls each time
RECEIPTS_PER_STEP = 1_000
BLOCK_READS_AT_ONCE = 32
MAX_BLOCK_TIMES = 4_096  # block times kept from the applied events: the receipts counted next are recent


class LedgerFollower:
    def __init__(
        self,
        store: LedgerStore,
        w3: AsyncWeb3,
        journal: TxJournal,
        cursors: CursorStore,
        addresses: Mapping[str, str],
        *,
        start_block: int = 0,
        confirmations: int = 0,
        interval_s: float = FOLLOW_INTERVAL_S,
    ):
        self.store = store
        self.journals = {"": journal}  # by name: "" the coordinator's, "driver-<i>" each round driver's
        self.interval_s = interval_s
        abis = {contract: (addresses[contract], _events_of(contract)) for contract, _ in EVENT_KINDS}
        topics = ["0x" + event_topic(item).hex() for _, items in abis.values() for item in items]
        self.reader = EventReader(
            w3, EventDecoder(abis), cursors, name=CURSOR_NAME, start_block=start_block,
            confirmations=confirmations, topics=[topics],
        )  # fmt: skip
        self.failure: str | None = None  # why the last follow failed, until one works
        self._block_times: dict[int, int] = {}
        self._last_follow_s = float("-inf")
        self._polling = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None  # the follow in the background, while it runs

    def follow_journal(self, name: str, journal: TxJournal) -> None:
        """Count a round driver's receipts too (its watermark is its own)."""
        self.journals[name] = journal

    def note_accounts(self, cards: Mapping[str, CardModel], operator: str) -> None:
        """The farm's node accounts and their card models, and the operator account."""
        by_account = {address: card.short_id for address, card in cards.items()} | {operator: OPERATOR_CARD}
        descriptions = {c.short_id: f"{c.gpu_name}, {c.vram_gb} GB, {c.runtime}" for c in cards.values()}
        self.store.note_accounts(by_account, descriptions)

    def note_block_times(self, events: list[ChainEvent]) -> None:
        """Block times from events applied elsewhere (the rounds' reader): the receipts' days, unread."""
        for event in events:
            if event.block_time_s is not None:
                self._block_times[event.block_number] = event.block_time_s
        if len(self._block_times) > MAX_BLOCK_TIMES:
            for block in sorted(self._block_times)[: len(self._block_times) - MAX_BLOCK_TIMES]:
                del self._block_times[block]

    def totals(self) -> LedgerTotals:
        return self.store.totals()

    def kick(self) -> None:
        """Start a follow in the background, unless one runs or the last began under ``interval_s`` ago:
        the coordinator calls it at every poll and never waits for it."""
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() - self._last_follow_s < self.interval_s:
            return
        self._last_follow_s = time.monotonic()
        self._task = asyncio.create_task(self.follow(), name="ledger-follow")

    async def aclose(self) -> None:
        """Stop a follow in flight (what it had not counted is counted at the next start) and the store."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.store.close()

    async def follow(self) -> None:
        """``poll``; a failure is logged and kept as ``failure`` (an alert), never raised: the rounds go
        on, and the next follow catches up."""
        try:
            await self.poll()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self.failure:
                log.error("[ledger] follow failed; retrying", exc_info=exc)
            self.failure = reason
        else:
            self.failure = None

    async def poll(self) -> None:
        """Count the new events, then every receipt in a block the events are read through."""
        async with self._polling:  # a test's own poll and the background one count one after the other
            await self.reader.poll(self._apply)
            for name, journal in self.journals.items():
                await self._count_receipts(name, journal, through_block=self.reader.next_block - 1)

    async def _apply(self, events: list[ChainEvent]) -> None:
        self.note_block_times(events)
        self.store.add(event_entries(events, self.store.is_known))

    async def _count_receipts(self, name: str, journal: TxJournal, through_block: int) -> None:
        while True:
            receipts = journal.paid_receipts_after(self.store.receipts_row(name), RECEIPTS_PER_STEP)
            ready = list(takewhile(lambda r: r.block_number <= through_block, receipts))
            if not ready:
                return
            times = await self._block_times_of({r.block_number for r in ready})
            entries = [entry for r in ready for entry in receipt_entries(r, times[r.block_number])]
            self.store.add(entries, receipts_row=ready[-1].row, journal=name)
            if len(ready) < RECEIPTS_PER_STEP:
                return

    async def _block_times_of(self, blocks: set[int]) -> dict[int, int]:
        unknown = sorted(blocks - self._block_times.keys())  # few: blocks with no event of the rounds'
        for first in range(0, len(unknown), BLOCK_READS_AT_ONCE):
            chunk = unknown[first : first + BLOCK_READS_AT_ONCE]
            headers = await asyncio.gather(
                *(self.reader.rpc.call("eth_getBlockByNumber", [hex(block), False]) for block in chunk)
            )
            self._block_times.update(
                (block, hex_int(header["timestamp"])) for block, header in zip(chunk, headers, strict=True)
            )
        return {block: self._block_times[block] for block in blocks}


def _events_of(contract: str) -> list[dict[str, Any]]:
    """The ABI entries of the contract's events the ledger reads."""
    abi = load_artifact(contract).abi
    return [item for item in abi if item.get("type") == "event" and (contract, item["name"]) in EVENT_KINDS]


def open_ledger(
    state_dir: Path,
    w3: AsyncWeb3,
    journal: TxJournal,
    cursors: CursorStore,
    addresses: Mapping[str, str],
    *,
    start_block: int,
    confirmations: int,
) -> LedgerFollower:
    """The coordinator's ledger, in ``state_dir/ledger.db``."""
    return LedgerFollower(
        LedgerStore(state_dir / "ledger.db"), w3, journal, cursors, addresses,
        start_block=start_block, confirmations=confirmations,
    )  # fmt: skip
