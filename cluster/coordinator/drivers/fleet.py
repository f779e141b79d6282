"""N round-driver actors behind the coordinator: the chain read once, its events fanned out by account.

Each of the farm's node accounts belongs to one driver (its derivation index modulo N), which signs all of
its transactions and keeps its rounds' rows (``actor.py``). The coordinator reads each page of events once
and hands every driver the events of its own rounds: a TaskStarted to the driver of the selected account,
the task's later events to the drivers of the farm's rounds of that task (``routes``), the timing settings
to all. A page a driver could not take is read again at the next poll, for every driver (applying an event
twice changes nothing). The routes are rebuilt from the drivers' unsettled rows when the coordinator starts.
What the farm keeps of pending tasks (cap, hash, sampling) stays in the coordinator's store and travels
with the TaskStarted it belongs to.

Drivers run on the coordinator's machine (their journals and rows are in its state directory, which a
restarted driver must find again), as detached actors that outlive a restart of the coordinator's actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import ray
from eth_account.signers.local import LocalAccount
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.chain.events import ChainEvent
from cluster.chain.sender import SentTx, TxRequest
from cluster.chain.task_events import (
    TaskNodeSettled,
    TaskPending,
    TaskSampled,
    TaskStarted,
    task_event,
    timing_event,
)
from cluster.chain.tx_journal import TxJournal
from cluster.config import ConfigError
from cluster.coordinator.drivers.actor import Accounts, DriverSpec, RoundDriverActor, ask
from cluster.coordinator.drivers.guard import Sibling
from cluster.coordinator.drivers.summary import RoundsSummary, merge
from cluster.coordinator.funds.book import BalanceBook
from cluster.coordinator.round_state import NodeTask
from cluster.coordinator.store import PendingTask, RoundStore
from cluster.ledger.follow import LedgerFollower
from cluster.protocol.cards import CardModel
from cluster.workers.messages import JobReply, JobRequest

if TYPE_CHECKING:
    from cluster.coordinator.coordinator import Coordinator

log = logging.getLogger(__name__)
NAMESPACE = "helium"
SIBLING_WAIT_S = 30.0  # the card guard waits this long for a sibling's job before asking its driver
REMEMBERED_JOBS = 10_000  # tasks whose rounds' job results the fleet keeps for the card guard
SUMMARY_EVERY_S = 5.0  # how stale the drivers' counts (and busy accounts) the coordinator reads may be
MAX_ROUTED_TASKS = 200_000  # routes of tasks whose settlements never came (kept bounded, oldest dropped)


class Rounds(Protocol):
    """What the coordinator asks of whoever drives its rounds (``RoundShard`` here, or ``DriverFleet``)."""

    async def apply(self, events: list[ChainEvent]) -> None: ...
    async def after_poll(self) -> None: ...
    def resume_unfinished(self) -> None: ...
    async def refresh(self) -> None: ...
    def summary(self) -> RoundsSummary: ...
    def busy_nodes(self) -> set[str] | frozenset[str]: ...
    async def close(self) -> None: ...


class DriverHost:
    """What the drivers ask of the actor that hosts the coordinator (mixed into ``CoordinatorActor``): a
    job run by the pool, and the card guard's verdict."""

    def hosted_coordinator(self) -> Coordinator | None:
        raise NotImplementedError

    def _started(self) -> Coordinator:
        coordinator = self.hosted_coordinator()
        if coordinator is None:
            raise ConnectionError("the coordinator is starting")  # the moment's: the driver retries
        return coordinator

    async def run_job(self, card: CardModel, request: JobRequest) -> JobReply:
        coordinator = self._started()
        reply = await coordinator.pool.run_job(card, request)
        if coordinator.fleet is not None:  # the card guard hears of the result as it passes
            coordinator.fleet.job_done(request, reply)
        return reply

    async def guard_holds(self, task: NodeTask) -> bool:
        return await self._started().guard.holds(task)


class RemoteSender:
    """Sends a node account's transaction through the driver that owns its nonces."""

    def __init__(self, handle: Any):
        self.handle = handle

    async def send(self, account: LocalAccount, request: TxRequest, *, key: str) -> SentTx:
        return await ask(self.handle.send.remote(account.address, request, key))


class DriverFleet:
    def __init__(self, coordinator: Coordinator, num_drivers: int):
        self.coordinator = coordinator
        self.num_drivers = num_drivers
        self.store: RoundStore = coordinator.store  # the caps of pending tasks
        self.routes: dict[int, dict[int, str]] = {}  # task id -> the farm's rounds of it -> their accounts
        self.handles: list[Any] = []
        self._summary = RoundsSummary()
        self._summary_at = 0.0
        self._failure: str | None = None
        self._root = Path(coordinator.settings.state_dir) / "drivers"
        self._journals: list[TxJournal] = []  # the drivers', read here
        # The results of the farm's jobs as they pass through the pool here (None: a task error), by task and
        # round, and an event per task the card guard waits on: it asks a driver only for a sibling whose
        # job has not come back within SIBLING_WAIT_S.
        self._jobs: OrderedDict[int, dict[int, bytes | None]] = OrderedDict()
        self._job_done: dict[int, asyncio.Event] = {}

    # -- life cycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        context = ray.get_runtime_context()
        try:
            host = context.current_actor
        except RuntimeError as exc:
            raise ConfigError(
                "round drivers need the coordinator to run as a Ray actor (CoordinatorActor, or "
                "a DriverHost); set round_drivers: 0 to run the rounds on its own loop"
            ) from exc
        settings = self.coordinator.settings
        tag = hashlib.sha256(str(Path(settings.state_dir).resolve()).encode()).hexdigest()[:8]
        here = NodeAffinitySchedulingStrategy(node_id=context.get_node_id(), soft=False)
        accounts = self._accounts()
        for index in range(self.num_drivers):
            spec = DriverSpec(
                index=index, num_drivers=self.num_drivers, endpoints=settings.endpoints,
                state_dir=self._root / str(index), mnemonic_env=settings.mnemonic_env,
                poll_interval_s=settings.poll_interval_s, sender=settings.sender,
                guard_own_results=settings.guard_own_results, failpoints=settings.failpoints,
            )  # fmt: skip
            self.handles.append(
                RoundDriverActor.options(
                    name=f"helium-round-driver-{tag}-{index}-of-{self.num_drivers}", namespace=NAMESPACE,
                    get_if_exists=True, lifetime="detached", scheduling_strategy=here,
                ).remote(spec, host, accounts)
            )  # fmt: skip
        await self.current_pids()  # every driver started (a restarted one resumes on its own)
        await self._tell_accounts(accounts)  # a driver found running may have been started with fewer
        for rows in await asyncio.gather(*(handle.unsettled.remote() for handle in self.handles)):
            for task_id, round_, node in rows:
                self.routes.setdefault(task_id, {})[round_] = node
        self.coordinator.ops.route = self._sender_of
        log.info("[coordinator] %d round driver(s) serve %d account(s); %d task(s) routed",
                 self.num_drivers, len(accounts), len(self.routes))  # fmt: skip

    async def current_pids(self) -> list[int]:
        """The drivers' processes now (a restarted driver has a new one)."""
        return list(await asyncio.gather(*(handle.ready.remote() for handle in self.handles)))

    def follow_journals(self, book: BalanceBook, ledger: LedgerFollower) -> None:
        """The drivers' receipts move the accounts' balances in the coordinator's book and are the gas in
        its ledger (the journals are on the coordinator's disk)."""
        for index in range(self.num_drivers):
            journal = TxJournal(self._root / str(index) / "transactions.db")
            self._journals.append(journal)
            book.follow(journal)
            ledger.follow_journal(f"driver-{index}", journal)

    async def close(self) -> None:
        """A stop: the drivers close their journals and go (a crash of the coordinator leaves them be)."""
        await asyncio.gather(*(handle.close.remote() for handle in self.handles), return_exceptions=True)
        for handle in self.handles:
            ray.kill(handle, no_restart=True)
        self.handles.clear()
        for journal in self._journals:
            journal.close()

    # -- accounts -------------------------------------------------------------------------------------------

    def _accounts(self) -> Accounts:
        return [(node.index, node.card) for node in self.coordinator.nodes.accounts]

    def _driver_of(self, address: str) -> int:
        return self.coordinator.nodes[address].index % self.num_drivers

    def _sender_of(self, address: str) -> RemoteSender | None:
        if address not in self.coordinator.nodes:
            return None  # the operator's own account: the coordinator's sender
        return RemoteSender(self.handles[self._driver_of(address)])

    async def tell_accounts(self) -> None:
        """Accounts were added (a machine joined): their drivers hold their keys before any is used."""
        await self._tell_accounts(self._accounts())

    async def _tell_accounts(self, accounts: Accounts) -> None:
        await asyncio.gather(*(handle.set_accounts.remote(accounts) for handle in self.handles))

    # -- the chain's events, fanned out ---------------------------------------------------------------------

    async def apply(self, events: list[ChainEvent]) -> None:
        pages: dict[int, list[ChainEvent]] = defaultdict(list)
        pending: dict[int, dict[int, PendingTask]] = defaultdict(dict)
        with self.store.transaction():
            for event in events:
                self._route(event, pages, pending)
        await asyncio.gather(
            *(self.handles[index].apply.remote([page], pending[index]) for index, page in pages.items())
        )
        while len(self.routes) > MAX_ROUTED_TASKS:
            self.routes.pop(next(iter(self.routes)))

    def _route(
        self,
        event: ChainEvent,
        pages: dict[int, list[ChainEvent]],
        pending: dict[int, dict[int, PendingTask]],
    ) -> None:
        if timing_event(event) is not None:
            for index in range(self.num_drivers):
                pages[index].append(event)
            return
        typed = task_event(event)
        if typed is None:
            return
        seen = self.store.follow_pending(typed)  # the pending tasks stay in the coordinator's store
        if isinstance(typed, TaskPending | TaskSampled):
            return
        if isinstance(typed, TaskStarted):
            if typed.node in self.coordinator.nodes:
                index = self._driver_of(typed.node)
                self.routes.setdefault(typed.task_id, {})[typed.round] = typed.node
                pages[index].append(event)
                if seen is not None:
                    pending[index][typed.task_id] = seen
            return
        rounds = self.routes.get(typed.task_id)
        if not rounds:
            return
        for index in {self._driver_of(node) for node in rounds.values()}:
            pages[index].append(event)
        if isinstance(typed, TaskNodeSettled):  # that round's last event
            for round_, node in list(rounds.items()):
                if node == typed.node:
                    del rounds[round_]
            if not rounds:
                del self.routes[typed.task_id]
                self._jobs.pop(typed.task_id, None)
                self._job_done.pop(typed.task_id, None)

    async def after_poll(self) -> None:
        block_s = int(self.coordinator.clock.latest_block_s)
        await asyncio.gather(*(handle.wake.remote(block_s) for handle in self.handles))
        if time.monotonic() - self._summary_at >= SUMMARY_EVERY_S:
            await self.refresh()

    def resume_unfinished(self) -> None:
        """Each driver resumes its own rounds at its first wake."""

    # -- what the coordinator reads -------------------------------------------------------------------------

    def job_done(self, request: JobRequest, reply: JobReply) -> None:
        """A job of the farm's came back through the pool: its result (None for a task error) is the card
        guard's to compare, and the guard's waits for it end."""
        if request.task_id is None or request.round is None:
            return  # not a round's job (the reference check)
        results = self._jobs.setdefault(request.task_id, {})
        results[request.round] = reply.result if reply.error is None else None
        self._jobs.move_to_end(request.task_id)
        while len(self._jobs) > REMEMBERED_JOBS:
            self._job_done.pop(self._jobs.popitem(last=False)[0], None)
        if (event := self._job_done.get(request.task_id)) is not None:
            event.set()

    async def siblings(self, task_id: int, round_: int, asked: Mapping[int, bytes]) -> list[Sibling]:
        """The farm's other rounds of the task (for the card guard), once each has a result or a task error
        here (asked the guard already, or its job came back through the pool), waiting up to
        ``SIBLING_WAIT_S`` for them; a sibling still without one then is asked of the driver that owns it."""
        others = {r: node for r, node in self.routes.get(task_id, {}).items() if r != round_}
        results = self._jobs.get(task_id, {})
        deadline = time.monotonic() + SIBLING_WAIT_S
        while (missing := others.keys() - asked.keys() - results.keys()) and time.monotonic() < deadline:
            event = self._job_done.setdefault(task_id, asyncio.Event())
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), deadline - time.monotonic())
            results = self._jobs.get(task_id, {})
        known = [Sibling(r, False, asked.get(r, results.get(r))) for r in others if r not in missing]
        found = await asyncio.gather(
            *(ask(self.handles[self._driver_of(others[r])].sibling.remote(task_id, r)) for r in missing)
        )
        return known + [sibling for sibling in found if sibling is not None]

    async def refresh(self) -> None:
        """The drivers' summaries, merged; a driver started with fewer accounts than it owns is told them."""
        try:
            summaries = await asyncio.gather(*(handle.summary.remote() for handle in self.handles))
            self._failure = None
        except Exception as exc:
            self._failure = f"{type(exc).__name__}: {exc}"
            log.warning("[coordinator] a round driver's summary failed: %s", self._failure)
            return
        expected = [0] * self.num_drivers
        for node in self.coordinator.nodes.accounts:
            expected[node.index % self.num_drivers] += 1
        if any(s.num_accounts != n for s, n in zip(summaries, expected, strict=True)):
            await self.tell_accounts()  # a restarted driver has its first accounts only
        self._summary = merge(summaries)
        self._summary_at = time.monotonic()

    def summary(self) -> RoundsSummary:
        return self._summary

    def busy_nodes(self) -> frozenset[str]:
        return self._summary.busy_nodes

    def alerts(self) -> list[str]:
        if self._failure is None:
            return []
        return [f"a round driver does not answer ({self._failure}): Ray restarts it; its rounds wait"]


def check_driver_count(state_dir: Path, num_drivers: int, own: RoundStore) -> None:
    """The accounts' journals and rows are split by the driver count (0: the coordinator's own): it changes
    only when no round of the old split is unfinished; the new owners then read each account's nonce from
    the chain, and the old split's rows are kept aside (``drivers-<count>-...``)."""
    root = state_dir / "drivers"
    marker = root / "count"
    old = int(marker.read_text()) if marker.exists() else 0
    if old != num_drivers:
        if old == 0:
            unfinished = len(own.unfinished())
        else:
            unfinished = sum(len(RoundStore(path).unfinished()) for path in root.iterdir() if path.is_dir())
        if unfinished:
            raise ConfigError(
                f"round_drivers changed from {old} to {num_drivers} with {unfinished} round(s) unfinished: "
                f"run with {old} until they end (`python -m cluster stop` drains them)"
            )
        if root.exists():
            for path in [p for p in root.iterdir() if p.is_dir()]:
                path.rename(state_dir / f"drivers-{old}-{path.name}-{int(time.time())}")
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(num_drivers))
