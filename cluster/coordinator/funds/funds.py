"""The one object the coordinator holds for the operator's money, and its few hooks into the loop:
``start`` (balances read once), ``observe`` (fee events), ``tick`` (each poll: top-ups, the sweep
schedule, retirements), ``status``/``alerts``, and the commands ``payout`` and ``retire``. Rounds that
wait for a top-up are the rounds' to count (``drivers/runners.py``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cluster.chain.events import ChainEvent
from cluster.coordinator.chain_ops import ChainOps
from cluster.coordinator.funds.book import BalanceBook
from cluster.coordinator.funds.gas import GasKeeper
from cluster.coordinator.funds.retire import BusyNodes, FundsState, Phase, Retirement
from cluster.coordinator.funds.settings import FundsSettings, require_payout_address
from cluster.coordinator.funds.sweep import Sweeper
from cluster.coordinator.nodes import NodeAccount, NodeSet
from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.failures import log_retried_failure
from cluster.status.model import WEI_PER_CNX, FundsView, PayoutReport

log = logging.getLogger(__name__)
READ_CONCURRENCY = 64  # balances read at once at start


class Funds:
    def __init__(
        self,
        settings: FundsSettings,
        ops: ChainOps,
        busy_nodes: BusyNodes,
        nodes: NodeSet,
        operator: LocalAccount,
        state_dir: Path,
        failpoints: Failpoints = NO_FAILPOINTS,
    ):
        self.settings = settings
        self.ops = ops
        self.nodes = nodes
        self.book = BalanceBook([ops.sender.journal])
        self.gas = GasKeeper(ops, self.book, operator, settings)
        self.sweeper = Sweeper(ops, settings, failpoints)
        self.state = FundsState(state_dir / "funds.db")
        self.retirement = Retirement(ops, busy_nodes, self.state, self.sweeper)
        self._sweep: asyncio.Task[PayoutReport] | None = None
        self._last_tick_failure: str | None = None

    async def start(self) -> None:
        """Settle what a killed process left, read every balance once, gate the nodes' sends, and carry on
        with the retirements under way."""
        addresses = self.nodes.addresses
        await self.gas.settle_unfinished(addresses)
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(address: str) -> None:
            async with limit:
                self.book.seed(address, await self.ops.balance(address))

        await asyncio.gather(*(read(a) for a in [self.gas.operator.address, *addresses]))
        await self.gas.reserve_wei()
        self.ops.gas_gate = self.gas.ensure
        under_way = [n for n in self.nodes.accounts if self.retirement.phases.get(n.address, Phase.RETIRED)
                     is not Phase.RETIRED]  # fmt: skip
        if under_way:
            log.info("[funds] carrying on with %d retirement(s)", len(under_way))
            self.retirement.start(under_way)

    async def follow(self, addresses: Iterable[str]) -> None:
        """Accounts added while the farm runs (a machine joined): their balances read once, then kept."""
        for address in addresses:
            if self.book.balance_wei(address) is None:
                self.book.seed(address, await self.ops.balance(address))

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            await asyncio.gather(self._sweep, return_exceptions=True)
        await self.retirement.close()
        await self.gas.close()
        self.ops.gas_gate = None
        self.state.close()

    @property
    def active(self) -> list[NodeAccount]:
        """The accounts the farm keeps serving: not retiring."""
        return [node for node in self.nodes.accounts if not self.retirement.is_retiring(node.address)]

    # -- hooks into the coordinator's loop -------------------------------------------------------------------

    def observe(self, events: Iterable[ChainEvent]) -> None:
        self.book.observe(events)

    async def tick(self) -> None:
        """At each poll: top-ups due, a sweep due, retirements look again. Never raises (the chain's
        moments are retried at the next poll; anything else is logged once)."""
        self.retirement.polled()
        try:
            await self.gas.check([node.address for node in self.active])
            self._maybe_sweep()
            self._last_tick_failure = None
        except Exception as exc:
            self._last_tick_failure = log_retried_failure(log, "[funds] check", exc, self._last_tick_failure)

    # -- commands ------------------------------------------------------------------------------------------

    async def payout(self, *, is_dry_run: bool = False) -> PayoutReport:
        """``python -m cluster payout``: every active account's balance above its reserve, and what the
        contracts credit it, to the payout address: any amount worth more than its gas."""
        report = await self.sweeper.sweep(
            self.active, keep_wei=await self.gas.reserve_wei(), min_wei=1, is_dry_run=is_dry_run
        )
        if not is_dry_run:
            self.state.swept_at(time.time())
        return report

    def retire(self, accounts: list[NodeAccount]) -> list[str]:
        """``python -m cluster retire``: the accounts newly marked (the others were already retiring)."""
        require_payout_address(self.settings)  # before anything is paused: the stakes must go somewhere
        return self.retirement.start(accounts)

    def is_retiring(self, address: str) -> bool:
        return self.retirement.is_retiring(address)

    def _maybe_sweep(self) -> None:
        every_s = self.settings.sweep_every_s
        if every_s <= 0 or self.settings.payout_address is None:
            return
        if self._sweep is not None and not self._sweep.done():
            return
        last_s = self.state.last_sweep_s()
        if last_s is not None and time.time() - last_s < every_s:
            return
        self._sweep = asyncio.create_task(self._scheduled_sweep(), name="scheduled-sweep")

    async def _scheduled_sweep(self) -> PayoutReport:
        report = await self.sweeper.sweep(
            self.active, keep_wei=await self.gas.reserve_wei(), min_wei=self.settings.sweep_threshold_wei
        )
        self.state.swept_at(time.time())
        log.info("[funds] scheduled sweep: %d account(s), %.6f CNX to %s, %d failed",
                 sum(line.amount_wei > 0 for line in report.lines), report.total_wei / WEI_PER_CNX,
                 report.payout_address, len(report.errors))  # fmt: skip
        return report

    # -- at a glance -----------------------------------------------------------------------------------------

    def status(self, num_rounds_waiting_for_gas: int = 0) -> FundsView:
        num_active = len(self.active)
        reserve_wei = self.gas.last_reserve_wei
        return FundsView(
            operator=self.gas.operator.address,
            operator_balance_wei=self.gas.operator_balance_wei(),
            operator_low_wei=self.gas.operator_low_wei(num_active, reserve_wei),
            gas_reserve_wei=reserve_wei,
            num_topups=self.gas.num_topups,
            num_rounds_waiting_for_gas=num_rounds_waiting_for_gas,
            payout_address=self.settings.payout_address,
            last_sweep_s=self.state.last_sweep_s(),
            retiring=self.retirement.counts(),
        )

    def alerts(self, view: FundsView) -> list[str]:
        alerts = []
        if view.is_operator_low:
            holds_cnx = (view.operator_balance_wei or 0) / WEI_PER_CNX
            alerts.append(
                f"the operator account {view.operator} holds {holds_cnx:.4f} CNX, "
                f"below {view.operator_low_wei / WEI_PER_CNX:.4f} CNX: it pays the node accounts' gas; "
                "send it CNX before the nodes run short"
            )
        if self.gas.last_failure is not None:
            alerts.append(f"topping up node accounts fails: {self.gas.last_failure}")
        if view.num_rounds_waiting_for_gas:
            alerts.append(
                f"{view.num_rounds_waiting_for_gas} round(s) wait for gas: their node accounts cannot pay "
                f"their transactions; the operator account {view.operator} tops them up once it has funds"
            )
        if self.retirement.last_failure is not None:
            failure = self.retirement.last_failure
            alerts.append(f"a retirement failed (it goes on at the next start): {failure}")
        return alerts
