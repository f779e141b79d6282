"""Leaving: node accounts paused, their tasks finished, quit for their stakes, everything swept.

``python -m cluster retire --card KEY | --all`` marks the accounts retiring in the state directory
(``funds.db``) before anything is sent, so a restarted coordinator carries on, and never joins them
again. Each account then moves through its phases, concurrently with the others:
- ``pausing``: ``pause`` (Available -> Paused; Busy -> PendingPause: no new task, the running one goes on);
- ``draining``: its rounds run to their end as any round does (the farm keeps driving them, and keeps the
  account in gas); it waits on the coordinator's polls, reading the chain only once the store says its
  rounds are done (or every ``STATUS_EVERY_S``);
- ``quitting``: ``quit`` once Paused (the contract refunds the stake at once); a node slashed or kicked out
  meanwhile is already quit;
- ``sweeping``: everything it holds (credits withdrawn first) to the payout address, keeping only the
  sweep's gas;
- ``retired``.
There is no notion of a machine in the farm's accounts (a node account is a task place of a card model,
and its tasks run on any GPU of that card model), so accounts are chosen by card model or all at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.chain_ops import ChainOps
from cluster.coordinator.funds.sweep import Sweeper
from cluster.coordinator.nodes import NodeAccount
from cluster.durable_sqlite import open_durable

BusyNodes = Callable[[], set[str] | frozenset[str]]  # the accounts with an unfinished round
log = logging.getLogger(__name__)
STATUS_EVERY_S = 10.0  # a draining account's chain status is read at least this often


class Phase(StrEnum):
    PAUSING = "pausing"
    DRAINING = "draining"
    QUITTING = "quitting"
    SWEEPING = "sweeping"
    RETIRED = "retired"


SCHEMA = """
CREATE TABLE IF NOT EXISTS retiring (address TEXT PRIMARY KEY, phase TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""


class FundsState:
    """``state_dir/funds.db``: the accounts retiring and their phases, and when the farm last swept."""

    def __init__(self, path: Path):
        self._db = open_durable(path, SCHEMA)

    def close(self) -> None:
        self._db.close()

    def mark_retiring(self, addresses: list[str]) -> None:
        now = time.time()
        self._db.executemany(
            "INSERT OR IGNORE INTO retiring (address, phase, updated_at) VALUES (?, ?, ?)",
            [(address, Phase.PAUSING.value, now) for address in addresses],
        )

    def set_phase(self, address: str, phase: Phase) -> None:
        self._db.execute(
            "UPDATE retiring SET phase = ?, updated_at = ? WHERE address = ?",
            (phase.value, time.time(), address),
        )

    def phases(self) -> dict[str, Phase]:
        rows = self._db.execute("SELECT address, phase FROM retiring").fetchall()
        return {address: Phase(phase) for address, phase in rows}

    def last_sweep_s(self) -> float | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'last_sweep_s'").fetchone()
        return None if row is None else float(row[0])

    def swept_at(self, unix_s: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('last_sweep_s', ?)", (unix_s,))


class Retirement:
    def __init__(self, ops: ChainOps, busy_nodes: BusyNodes, state: FundsState, sweeper: Sweeper):
        self.ops = ops
        self.busy_nodes = busy_nodes
        self.state = state
        self.sweeper = sweeper
        self.phases = state.phases()  # by address; the table's copy, kept in step with it
        self._polled = asyncio.Event()  # set at each poll of the coordinator: draining accounts look again
        self._running: dict[str, asyncio.Task[None]] = {}
        self._nodes_with_rounds: set[str] = set(busy_nodes())
        self.last_failure: str | None = None

    def is_retiring(self, address: str) -> bool:
        return address in self.phases

    def start(self, accounts: list[NodeAccount]) -> list[str]:
        """Mark the accounts retiring (durably, first) and take each through its phases in the background;
        the addresses newly marked."""
        new = [node.address for node in accounts if node.address not in self.phases]
        self.state.mark_retiring(new)
        self.phases.update(dict.fromkeys(new, Phase.PAUSING))
        for node in accounts:
            if self.phases[node.address] is not Phase.RETIRED and node.address not in self._running:
                task = asyncio.create_task(self._retire_logged(node), name=f"retire-{node.address}")
                self._running[node.address] = task
                task.add_done_callback(lambda _, a=node.address: self._running.pop(a, None))
        return new

    async def wait(self) -> None:
        """Until every account being retired now is retired (or has failed: see ``last_failure``)."""
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    def polled(self) -> None:
        """The coordinator polled the chain: draining accounts look again (one store read for all)."""
        if self._running:
            self._nodes_with_rounds = set(self.busy_nodes())
        self._polled.set()
        self._polled = asyncio.Event()

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for phase in self.phases.values():
            counts[phase.value] = counts.get(phase.value, 0) + 1
        return counts

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one account -----------------------------------------------------------------------------------------

    async def _retire_logged(self, node: NodeAccount) -> None:
        try:
            await self._retire(node)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # shown in the status; a restart (or the command again) carries on
            log.error("[funds] retirement failed node=%s phase=%s", node.address, self.phases[node.address],
                      exc_info=exc)  # fmt: skip
            self.last_failure = f"{node.address}: {type(exc).__name__}: {exc}"

    async def _retire(self, node: NodeAccount) -> None:
        address = node.address
        while (phase := self.phases[address]) is not Phase.RETIRED:
            if phase is Phase.PAUSING:
                if await self.ops.node_status(address) in (NodeStatus.AVAILABLE, NodeStatus.BUSY):
                    await self.ops.pause(node.account, await self.ops.transaction_count(address))
                self._enter(address, Phase.DRAINING)
            elif phase is Phase.DRAINING:
                await self._drained(node)
                self._enter(address, Phase.QUITTING)
            elif phase is Phase.QUITTING:
                status = await self.ops.node_status(address)
                if status in (NodeStatus.AVAILABLE, NodeStatus.PAUSED):  # the stake comes back at once
                    await self.ops.quit(node.account, await self.ops.transaction_count(address))
                elif status is not NodeStatus.QUIT:  # a task again (a resume meanwhile): drain it first
                    self._enter(address, Phase.PAUSING)
                    continue
                self._enter(address, Phase.SWEEPING)
            else:
                line = await self.sweeper.sweep_one(node, keep_wei=0, min_wei=1)
                log.info("[funds] retired node=%s swept_wei=%d", address, line.amount_wei)
                self._enter(address, Phase.RETIRED)

    async def _drained(self, node: NodeAccount) -> None:
        """Return once the node holds no task on chain (Paused, or Quit if slashed or kicked out)."""
        read_at = -STATUS_EVERY_S
        while True:
            is_running = node.address in self._nodes_with_rounds
            if not is_running or time.monotonic() - read_at >= STATUS_EVERY_S:
                read_at = time.monotonic()
                if await self.ops.node_status(node.address) in (NodeStatus.PAUSED, NodeStatus.QUIT):
                    return
            await self._polled.wait()

    def _enter(self, address: str, phase: Phase) -> None:
        self.state.set_phase(address, phase)
        self.phases[address] = phase
