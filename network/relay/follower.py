"""Follows the Task contract's events into the relay's store, from the store's own block cursor.

The relay needs only an RPC URL and the contract address: creators, selected nodes and validated results
all come from events. Applying an event twice is harmless, so the reader's at-least-once delivery is
enough; the cursor lives in the relay's database, beside what it describes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from web3 import AsyncWeb3

from cluster.chain.events import ChainEvent, EventDecoder, EventReader
from cluster.chain.task_events import (
    TaskAborted,
    TaskEvent,
    TaskPending,
    TaskStarted,
    TaskSuccess,
    task_events,
)
from network.relay.store import ChainFacts, RelayStore

log = logging.getLogger(__name__)
CURSOR_NAME = "task-events"


class _StoreCursors:
    """The EventReader's cursor interface over the relay's database."""

    def __init__(self, store: RelayStore):
        self.store = store

    def get(self, name: str) -> int | None:
        return self.store.get_cursor(name)

    def set(self, name: str, next_block: int) -> None:
        self.store.set_cursor(name, next_block)


class ChainFollower:
    def __init__(
        self,
        w3: AsyncWeb3,
        task_address: str,
        task_abi: Sequence[Mapping[str, Any]],
        store: RelayStore,
        *,
        start_block: int = 0,
        confirmations: int = 0,
    ):
        decoder = EventDecoder({"Task": (task_address, task_abi)})
        self.store = store
        self.reader = EventReader(
            w3, decoder, _StoreCursors(store), name=CURSOR_NAME, start_block=start_block,
            confirmations=confirmations,
        )  # fmt: skip

    async def poll(self) -> int:
        return await self.reader.poll(self._apply)

    async def run(self, stop: asyncio.Event, poll_interval_s: float) -> None:
        await self.reader.run(self._apply, poll_interval_s=poll_interval_s, stop=stop)

    async def _apply(self, events: list[ChainEvent]) -> None:
        await asyncio.to_thread(self._apply_sync, events)

    def _apply_sync(self, events: list[ChainEvent]) -> None:
        # One transaction per page: a node asking between a task's TaskPending and its third TaskStarted
        # must not find itself missing from the selection (a final 403) when it is merely early.
        with self.store.chain_facts() as facts:
            for event in task_events(events):
                apply_event(facts, event)


def apply_event(facts: ChainFacts, event: TaskEvent) -> None:
    match event:
        case TaskPending():
            facts.saw_task(event.task_id, event.task_type, event.creator, event.task_hash)
        case TaskStarted():
            facts.saw_task(event.task_id, event.task_type, event.creator, event.task_hash)
            facts.saw_selection(event.task_id, event.round, event.node)
        case TaskSuccess():
            facts.saw_success(event.task_id, event.result, event.result_node)
        case TaskAborted():
            facts.saw_abort(event.task_id, event.reason)
