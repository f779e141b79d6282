"""The coordinator's loop: follow the chain for the farm's nodes and drive every task row to its end.

One asyncio task per unfinished (task, round) runs its steps (flow.advance) and sleeps until the chain
watch wakes it; failures are logged and retried with backoff, never allowed to stop the loop. Everything
the loop knows is in the state directory, so a new process (or a restarted Ray actor) picks up where the
last one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from web3 import AsyncWeb3

from cluster.chain.accounts import OperatorKeys
from cluster.chain.artifacts import load_artifact
from cluster.chain.events import CursorStore, EventDecoder, EventReader
from cluster.chain.rpc import connect
from cluster.chain.sender import SenderConfig, TxSender
from cluster.chain.tx_journal import TxJournal
from cluster.coordinator.chain_ops import ChainOps, abis
from cluster.coordinator.chain_watch import ChainWatch
from cluster.coordinator.flow import FlowContext, JobRunner, advance
from cluster.coordinator.nodes import Slot, bring_up, pause_all, quit_all
from cluster.coordinator.store import NodeTask, Step, TaskStore
from cluster.protocol.hashes import card_model_key
from cluster.relay import RelayClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinatorSettings:
    rpc_url: str
    addresses: dict[str, str]  # contract name -> address
    relay_url: str
    state_dir: Path
    cards: Sequence[tuple[str, int, str]]  # one (gpuName, gpuVramGB, runtime) per node slot, in slot order
    start_block: int = 0
    poll_interval_s: float = 0.5
    guard_own_results: bool = True
    checkpoint: Callable[[str, NodeTask], None] | None = None  # a test hook (see flow.FlowContext)
    corrupt_slots: frozenset[int] = frozenset()  # a test fault: these slots commit wrong results
    sender: SenderConfig = field(default_factory=SenderConfig)


class Coordinator:
    def __init__(self, settings: CoordinatorSettings, keys: OperatorKeys, pool: JobRunner):
        self.settings = settings
        self.keys = keys
        self.pool = pool
        self.slots = [
            Slot(i, keys.node(i), card, card_model_key(*card)) for i, card in enumerate(settings.cards)
        ]
        self.paused_cards: set[bytes] = set()
        self.alerts: list[str] = []
        self._chain_time = 0.0
        self._wakeups: dict[tuple[int, int], asyncio.Event] = {}
        self._runners: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._relays: dict[str, RelayClient] = {}
        self._started = False

    # -- life cycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        state = self.settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        self.w3: AsyncWeb3 = connect(self.settings.rpc_url)
        self.sender = TxSender(self.w3, TxJournal(state / "transactions.db"), abis(), self.settings.sender)
        self.ops = ChainOps(self.w3, self.sender, self.settings.addresses)
        self.store = TaskStore(state)
        self.cursors = CursorStore(state / "cursor.db")
        decoder = EventDecoder({"Task": (self.settings.addresses["Task"], load_artifact("Task").abi)})
        self.reader = EventReader(
            self.w3, decoder, self.cursors, name="coordinator", start_block=self.settings.start_block
        )
        timeout_s = float(await self.ops.task.functions.taskTimeout().call())
        nodes = {slot.account.address for slot in self.slots}
        self.watch = ChainWatch(self.store, lambda: nodes, timeout_s)
        self._http = httpx.AsyncClient(timeout=30.0)
        self.ctx = FlowContext(
            store=self.store, ops=self.ops, pool=self.pool,
            accounts={s.account.address: s.account for s in self.slots},
            card_of={s.account.address: s.card_key for s in self.slots},
            relay_for=self._relay_for, chain_time=lambda: self._chain_time,
            seconds_left=lambda task: task.deadline - self._chain_time,
            on_disagreement=self._on_disagreement, guard_own_results=self.settings.guard_own_results,
        )  # fmt: skip
        if self.settings.checkpoint is not None:
            self.ctx.checkpoint = self.settings.checkpoint
        self.ctx.corrupt_nodes = frozenset(self.slots[i].account.address for i in self.settings.corrupt_slots)
        self._chain_time = await self._now()
        self._started = True

    async def join_nodes(self, slots: Sequence[Slot] | None = None) -> dict[str, Any]:
        return await bring_up(self.ops, self.keys.operator, list(slots or self.slots))

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the chain and drive tasks until ``stop`` is set."""
        for task in self.store.unfinished():  # what the last process left
            self._ensure_runner(task)
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("[coordinator] poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_interval_s)

    async def _now(self) -> float:
        """The time the next block will carry, as best known: the latest block's, or the clock when later.

        A quiet chain mines no blocks (anvil mines on demand), so the latest block's timestamp alone would
        never reach a deadline; a cancel that comes too early is refused and tried again.
        """
        return max(float(await self.ops.chain_time()), time.time())

    async def poll_once(self) -> None:
        self._chain_time = await self._now()
        await self.reader.poll(self._on_events)
        for key, event in self._wakeups.items():  # deadlines move with chain time: let every runner look
            if key in self._runners:
                event.set()

    async def stop(self, *, drain: bool = True, quit: bool = False, timeout_s: float = 60.0) -> None:
        """Graceful stop: pause the nodes, let running tasks finish, optionally quit for the stakes."""
        await pause_all(self.ops, self.slots)
        if drain:
            deadline = time.monotonic() + timeout_s
            while self.store.unfinished() and time.monotonic() < deadline:
                await self.poll_once()
                await asyncio.sleep(self.settings.poll_interval_s)
        if quit:
            await quit_all(self.ops, self.slots)
        await self.close()

    async def close(self) -> None:
        for runner in self._runners.values():
            runner.cancel()
        await asyncio.gather(*self._runners.values(), return_exceptions=True)
        self._runners.clear()
        if self._started:
            await self._http.aclose()
            await self.w3.provider.disconnect()
            self.sender.journal.close()
            self.store.close()
            self.cursors.close()
            self._started = False

    # -- events and runners -------------------------------------------------------------------------------

    async def _on_events(self, events: list[Any]) -> None:
        for task in self.watch.apply(events, self._chain_time):
            self._ensure_runner(task)

    def _ensure_runner(self, task: NodeTask) -> None:
        key = (task.task_id, task.round)
        self._wakeups.setdefault(key, asyncio.Event()).set()
        if task.step is not Step.DONE and (key not in self._runners or self._runners[key].done()):
            self._runners[key] = asyncio.create_task(self._drive(key), name=f"task-{key[0]}-{key[1]}")

    async def _drive(self, key: tuple[int, int]) -> None:
        wakeup = self._wakeups.setdefault(key, asyncio.Event())
        backoff_s = 0.5
        while True:
            task = self.store.get(*key)
            if task is None or task.step is Step.DONE:
                self._wakeups.pop(key, None)
                return
            wakeup.clear()
            try:
                moved = await advance(self.ctx, task)
                backoff_s = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nothing stops the coordinator: log, back off, try the step again
                log.warning(
                    "[coordinator] step failed task=%d round=%d step=%s error=%r", *key, task.step, exc
                )
                moved = False
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 10.0)
            if not moved:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=max(self.settings.poll_interval_s, 1.0))

    def _relay_for(self, node: str) -> RelayClient:
        if node not in self._relays:
            account = self.ctx.accounts[node]
            self._relays[node] = RelayClient(self.settings.relay_url, account, http=self._http)
        return self._relays[node]

    async def _on_disagreement(self, task: NodeTask, siblings: list[NodeTask]) -> None:
        card = self.ctx.card_of[task.node]
        if card in self.paused_cards:
            return
        self.paused_cards.add(card)
        message = (
            f"ALERT: the farm's own slots disagree on task {task.task_id} (rounds "
            f"{[task.round, *[s.round for s in siblings]]}); card model {card.hex()[:16]} paused, "
            "nothing disclosed"
        )
        self.alerts.append(message)
        log.error("[coordinator] %s", message)
        await pause_all(self.ops, [s for s in self.slots if s.card_key == card])

    # -- at a glance ----------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "nodes": [s.account.address for s in self.slots],
            "tasks": self.store.counts(),
            "earned_wei": self.store.earnings_wei(),
            "running_steps": len([r for r in self._runners.values() if not r.done()]),
            "paused_cards": [c.hex() for c in self.paused_cards],
            "alerts": list(self.alerts),
        }
