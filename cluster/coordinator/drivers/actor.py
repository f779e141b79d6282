"""A round-driver actor: the rounds of its share of the node accounts, in its own process.

It owns, for its accounts, what must have one owner: their nonces and transaction journal (every
transaction of theirs is signed here, a lifecycle one the coordinator asks for included) and their rows.
It reads no chain events of its own: the coordinator reads the chain once and hands each driver the events
of its rounds (``fleet.py``), with the latest block's time. What it asks of the coordinator: a job run by
the pool (the queue is the coordinator's) and the card guard's verdict before a commitment.

Ray restarts a driver that dies (``max_restarts=-1``); the new process opens the same journal and rows and
resumes every round under the rules that make a step safe to replay (``rounds.py``, ``cluster.chain.sender``):
a transaction journaled before it died is settled by its key, never signed twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from cluster import envs
from cluster.chain.accounts import OperatorKeys
from cluster.chain.crypto_backend import log_signing_backend
from cluster.chain.events import ChainEvent
from cluster.chain.rpc import connect
from cluster.chain.sender import SenderConfig, SentTx, TxRequest, TxSender
from cluster.chain.tx_journal import TxJournal
from cluster.config import ChainEndpoints
from cluster.coordinator.chain_ops import ChainOps, abis
from cluster.coordinator.chain_watch import ChainWatch
from cluster.coordinator.clock import ChainClock
from cluster.coordinator.drivers.guard import Sibling
from cluster.coordinator.drivers.shard import RoundShard
from cluster.coordinator.drivers.summary import RoundsSummary
from cluster.coordinator.nodes import NodeSet
from cluster.coordinator.round_state import NodeTask
from cluster.coordinator.rounds import RoundDriver, relay_session
from cluster.coordinator.store import PendingTask, RoundStore
from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.failures import log_retried_failure
from cluster.protocol.cards import CardModel
from cluster.workers.messages import JobReply, JobRequest

log = logging.getLogger(__name__)
Accounts = list[
    tuple[int, CardModel]
]  # (derivation index, card model), as the coordinator's registry has them


@dataclass(frozen=True)
class DriverSpec:
    """What a driver is started with (and restarted with: Ray keeps it)."""

    index: int
    num_drivers: int
    endpoints: ChainEndpoints
    state_dir: Path  # its own: <coordinator state>/drivers/<index>
    mnemonic_env: str  # the operator's mnemonic is read here, from this process's environment, never sent
    poll_interval_s: float
    sender: SenderConfig
    guard_own_results: bool
    failpoints: Failpoints = NO_FAILPOINTS  # the restart tests kill a driver at one

    def owns(self, index: int) -> bool:
        return index % self.num_drivers == self.index


async def ask(ref: Any) -> Any:
    """A call to the coordinator's actor, its own exception raised as itself; the actor gone or restarting
    is a ``ConnectionError`` (transient: the round retries)."""
    try:
        return await ref
    except RayTaskError as exc:
        cause = exc.cause
        raise (cause if isinstance(cause, BaseException) else ConnectionError(str(exc))) from None
    except (RayActorError, GetTimeoutError) as exc:
        raise ConnectionError(f"the coordinator did not answer: {exc}") from exc


class HostJobs:
    """The pool, behind the coordinator's actor: a job is queued and assigned there."""

    def __init__(self, host: Any):
        self.host = host

    async def run_job(self, card: CardModel, request: JobRequest) -> JobReply:
        return await ask(self.host.run_job.remote(card, request))


class DriverService:
    """The driver's work in plain Python (the actor below only wraps it)."""

    def __init__(self, spec: DriverSpec, host: Any):
        self.spec = spec
        self.host = host
        self.nodes: NodeSet | None = None
        self._resumed = False

    async def start(self, accounts: Accounts) -> None:
        spec, endpoints = self.spec, self.spec.endpoints
        log_signing_backend(log, f"round driver {spec.index}")
        spec.state_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = NodeSet(OperatorKeys.from_mnemonic_source(env=spec.mnemonic_env))
        self.set_accounts(accounts)
        self.w3 = connect(endpoints.rpc_url)
        sender_config = replace(spec.sender, confirmations=endpoints.confirmations)
        self.sender = TxSender(self.w3, TxJournal(spec.state_dir / "transactions.db"), abis(), sender_config)
        self.ops = ChainOps(self.w3, self.sender, endpoints.addresses)
        self.store = RoundStore(spec.state_dir)
        self.clock = ChainClock()
        self.clock.observe_block(await self.ops.latest_block_time_s())
        timers = await self.ops.task_timers()  # then followed through the timing events every driver gets
        self._http = relay_session()
        driver = RoundDriver(
            self.store, self.ops, HostJobs(self.host), self.nodes, self.clock, timers,
            relay_url=endpoints.relay_url, http=self._http,
            guard=self._guard if spec.guard_own_results else None, failpoints=spec.failpoints,
        )  # fmt: skip
        watch = ChainWatch(self.store, self.nodes.__contains__, timers)
        self.shard = RoundShard(self.store, watch, driver, poll_interval_s=spec.poll_interval_s)
        log.info("[driver %d] started: %d account(s), %d unsettled round(s)", spec.index,
                 len(self.nodes.accounts), len(self.store.unsettled()))  # fmt: skip

    def set_accounts(self, accounts: Accounts) -> int:
        """Hold the keys of this driver's share of ``accounts`` (new ones added); how many it holds."""
        assert self.nodes is not None
        known = {node.index for node in self.nodes.accounts}
        self.nodes.add((i, card) for i, card in accounts if self.spec.owns(i) and i not in known)
        return len(self.nodes.accounts)

    async def _guard(self, task: NodeTask) -> bool:
        return await ask(self.host.guard_holds.remote(task))

    async def apply(self, pages: list[list[ChainEvent]], pending: dict[int, PendingTask]) -> None:
        """The events of this driver's rounds, page by page as the coordinator read them; what the farm saw
        pending of the tasks they start (the coordinator keeps the TaskPending and TaskSampled events)."""
        with self.store.transaction():
            for task_id, seen in pending.items():
                self.store.keep_pending(task_id, seen)
        for page in pages:
            await self.shard.apply(page)

    async def wake(self, block_time_s: int) -> None:
        """After each of the coordinator's polls: the chain's time, the changed rows run, every runner looks.
        The first wake after a start resumes what the last process left (its events are in by then)."""
        self.clock.observe_block(block_time_s)
        if not self._resumed:
            self.shard.resume_unfinished()
            self._resumed = True
        await self.shard.after_poll()

    async def send(self, address: str, request: TxRequest, key: str) -> SentTx:
        """A transaction of one of this driver's accounts that the coordinator asks for (join, pause,
        resume, quit, sweep): signed with the account's nonces, in this journal."""
        assert self.nodes is not None
        return await self.sender.send(self.nodes[address].account, request, key=key)

    def sibling(self, task_id: int, round_: int) -> Sibling | None:
        task = self.store.get(task_id, round_)
        return None if task is None else Sibling.of(task)

    def summary(self) -> RoundsSummary:
        assert self.nodes is not None
        return self.shard.summary(len(self.nodes.accounts))

    async def close(self) -> None:
        await self.shard.close()
        await self.sender.aclose()
        await self._http.close()
        await self.w3.provider.disconnect()
        self.sender.journal.close()
        self.store.close()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class RoundDriverActor:
    def __init__(self, spec: DriverSpec, host: Any, accounts: Accounts):
        logging.basicConfig(level=envs.LOG_LEVEL.get())
        self.service = DriverService(spec, host)
        # Started on the actor's loop at once: a restarted driver is ready before anyone asks.
        self._boot = asyncio.get_event_loop().create_task(self._start(accounts))

    async def _start(self, accounts: Accounts, retry_s: float = 2.0) -> None:
        """Until it starts: the chain not answering yet is the moment's; anything else is logged once."""
        last_failure = None
        while True:
            try:
                await self.service.start(accounts)
                return
            except Exception as exc:
                last_failure = log_retried_failure(log, "[driver] start", exc, last_failure)
                await asyncio.sleep(retry_s)

    async def ready(self) -> int:
        """Once started: this process's id (the benchmarks measure its CPU)."""
        await asyncio.shield(self._boot)
        return os.getpid()

    async def set_accounts(self, accounts: Accounts) -> int:
        await asyncio.shield(self._boot)
        return self.service.set_accounts(accounts)

    async def apply(self, pages: list[list[ChainEvent]], caps: dict[int, int]) -> None:
        await asyncio.shield(self._boot)
        await self.service.apply(pages, caps)

    async def wake(self, block_time_s: int) -> None:
        await asyncio.shield(self._boot)
        await self.service.wake(block_time_s)

    async def send(self, address: str, request: TxRequest, key: str) -> SentTx:
        await asyncio.shield(self._boot)
        return await self.service.send(address, request, key)

    async def sibling(self, task_id: int, round_: int) -> Sibling | None:
        await asyncio.shield(self._boot)
        return self.service.sibling(task_id, round_)

    async def summary(self) -> RoundsSummary:
        await asyncio.shield(self._boot)
        return self.service.summary()

    async def unsettled(self) -> list[tuple[int, int, str]]:
        await asyncio.shield(self._boot)
        return self.service.store.unsettled()

    async def close(self) -> None:
        await asyncio.shield(self._boot)
        await self.service.close()
