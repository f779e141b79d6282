"""The rounds of a set of node accounts: their rows, the chain's events applied to them, a runner each.

The coordinator's own loop holds one shard for all its accounts (a farm of few places); each round driver
actor (``actor.py``) holds one for its share of the accounts, fed the events the coordinator read once
(``fleet.py``). Either way the coordinator calls the same few methods (``Rounds`` in ``fleet.py``).
"""

from __future__ import annotations

from cluster.chain.events import ChainEvent
from cluster.coordinator.chain_watch import ChainWatch
from cluster.coordinator.drivers.runners import GasWaits, RoundRunners
from cluster.coordinator.drivers.summary import RoundsSummary
from cluster.coordinator.round_state import NodeTask
from cluster.coordinator.rounds import RoundDriver
from cluster.coordinator.store import RoundStore


class RoundShard:
    def __init__(self, store: RoundStore, watch: ChainWatch, driver: RoundDriver, *, poll_interval_s: float):
        self.store = store
        self.watch = watch
        self.driver = driver
        self.gas_waits = GasWaits(store)
        self.runners = RoundRunners(store, driver, self.gas_waits, poll_interval_s=poll_interval_s)
        self._changed: dict[tuple[int, int], NodeTask] = {}  # rows changed by pages whose runners wait

    async def apply(self, events: list[ChainEvent]) -> None:
        """A page of events, in chain order, written in one transaction; the rows it changed are run at
        ``after_poll``, once every page is in (a task that ended in a later page is never run)."""
        self._changed.update(((t.task_id, t.round), t) for t in self.watch.apply(events))

    async def after_poll(self) -> None:
        for task in self._changed.values():
            self.runners.ensure(task)
        self._changed.clear()
        self.runners.wake_due()  # deadlines pass with chain time

    def resume_unfinished(self) -> None:
        self.runners.resume_unfinished()

    async def refresh(self) -> None:
        """Nothing to fetch: the rows are here."""

    def busy_nodes(self) -> set[str]:
        return self.store.busy_nodes()

    def summary(self, num_accounts: int = 0) -> RoundsSummary:
        return RoundsSummary(
            counts=self.store.counts(),
            earnings_by_node=self.store.earnings_by_node(),
            last_selected_chain_s=self.store.last_selected_chain_s(),
            busy_nodes=frozenset(self.store.busy_nodes()),
            num_running=self.runners.num_running,
            num_waiting_for_disk=len(self.runners.waiting_for_disk),
            num_waiting_for_gas=len(self.gas_waits.waiting),
            num_accounts=num_accounts,
        )

    async def close(self) -> None:
        await self.runners.close()
