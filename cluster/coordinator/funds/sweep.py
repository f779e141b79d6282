"""Sweeps: what a node account holds above its reserve goes to the payout address, exactly once.

For each account, concurrently:
1. Credits a contract holds for it (a refused push payment, ``PaymentDeferred``: both Node and Task are
   ``Payouts``) are withdrawn first, so that they are swept with the rest.
2. Sweeps and withdrawals a killed process left signed are settled (the same signed bytes, or their
   receipt) before anything new is decided.
3. The balance and the transaction count are read; the sweep is sent under ``sweep:{node}:{count}``. Once
   it is mined the count has moved and the balance is down to the reserve, so a rerun finds nothing to
   sweep; until then the journal holds its bytes, which step 2 settles. Nothing is sent twice.
The amount leaves the reserve and the sweep's own gas at up to twice today's fee (the sender's quote may
move between the read and the signature); the difference stays on the account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from cluster.chain.sender import TxRequest
from cluster.coordinator.chain_ops import ChainOps
from cluster.coordinator.funds.resend import max_fee_per_gas_wei, settle_signed
from cluster.coordinator.funds.settings import FundsSettings, require_payout_address
from cluster.coordinator.nodes import NodeAccount
from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.status.model import PayoutReport, SweepLine

log = logging.getLogger(__name__)
SWEEP_FEE_HEADROOM = 2  # the sweep's gas is kept at this many times today's max fee per gas
PAYOUT_CONTRACTS = ("Node", "Task")  # both hold credits for payments an account refused


class Sweeper:
    def __init__(self, ops: ChainOps, settings: FundsSettings, failpoints: Failpoints = NO_FAILPOINTS):
        self.ops = ops
        self.settings = settings
        self.failpoints = failpoints
        self._locks: dict[str, asyncio.Lock] = {}  # one sweep of an account at a time (schedule, command)

    async def sweep(
        self, accounts: Sequence[NodeAccount], *, keep_wei: int, min_wei: int, is_dry_run: bool = False
    ) -> PayoutReport:
        """Every account's balance above ``keep_wei`` to the payout address, where at least ``min_wei``."""
        payout = require_payout_address(self.settings)
        limit = asyncio.Semaphore(self.settings.sweep_concurrency)

        async def one(node: NodeAccount) -> SweepLine:
            async with limit:
                try:
                    return await self.sweep_one(
                        node, keep_wei=keep_wei, min_wei=min_wei, is_dry_run=is_dry_run
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one account's failure is reported; the others go on
                    log.error("[funds] sweep failed node=%s", node.address, exc_info=exc)
                    return SweepLine(
                        node=node.address, balance_wei=0, amount_wei=0, error=f"{type(exc).__name__}: {exc}"
                    )

        lines = await asyncio.gather(*(one(node) for node in accounts))
        return PayoutReport(payout_address=payout, is_dry_run=is_dry_run, lines=list(lines))

    async def sweep_one(
        self, node: NodeAccount, *, keep_wei: int, min_wei: int, is_dry_run: bool = False
    ) -> SweepLine:
        async with self._locks.setdefault(node.address, asyncio.Lock()):
            return await self._sweep_one(node, keep_wei=keep_wei, min_wei=min_wei, is_dry_run=is_dry_run)

    async def _sweep_one(
        self, node: NodeAccount, *, keep_wei: int, min_wei: int, is_dry_run: bool
    ) -> SweepLine:
        payout = require_payout_address(self.settings)
        address = node.address
        if not is_dry_run:
            await self._settle_unfinished(node)
        withdrawn_wei = await self._withdraw_credits(node, is_dry_run)
        balance_wei, count = await asyncio.gather(
            self.ops.balance(address), self.ops.transaction_count(address)
        )
        if is_dry_run:
            balance_wei += withdrawn_wei  # what the withdrawal would add
        gas = await self.ops.sender.chain.estimate_gas(address, TxRequest(to=payout))
        fee = await max_fee_per_gas_wei(self.ops)
        amount_wei = balance_wei - keep_wei - gas * fee * SWEEP_FEE_HEADROOM
        if amount_wei < max(min_wei, 1):
            return SweepLine(node=address, balance_wei=balance_wei, amount_wei=0, withdrawn_wei=withdrawn_wei)
        if is_dry_run:
            return SweepLine(
                node=address, balance_wei=balance_wei, amount_wei=amount_wei, withdrawn_wei=withdrawn_wei
            )
        self.failpoints.reached("sweeping", f"node={node.index}")
        request = TxRequest(to=payout, value_wei=amount_wei, gas=gas)
        sent = await self.ops.send(node.account, request, f"sweep:{address}:{count}", gated=False)
        self.failpoints.reached("swept", f"node={node.index}")
        log.info("[funds] swept node=%s wei=%d to=%s tx=%s", address, amount_wei, payout, sent.tx_hash)
        return SweepLine(
            node=address, balance_wei=balance_wei, amount_wei=amount_wei, withdrawn_wei=withdrawn_wei,
            tx_hash=sent.tx_hash,
        )  # fmt: skip

    async def _withdraw_credits(self, node: NodeAccount, is_dry_run: bool) -> int:
        credits = await asyncio.gather(*(self.ops.credits(name, node.address) for name in PAYOUT_CONTRACTS))
        withdrawn_wei = 0
        for name, credit_wei in zip(PAYOUT_CONTRACTS, credits, strict=True):
            if credit_wei == 0:
                continue
            if not is_dry_run:
                await self.ops.withdraw(node.account, name, await self.ops.transaction_count(node.address))
                log.info("[funds] withdrawn node=%s contract=%s wei=%d", node.address, name, credit_wei)
            withdrawn_wei += credit_wei
        return withdrawn_wei

    async def _settle_unfinished(self, node: NodeAccount) -> None:
        address = node.address
        prefixes = [f"sweep:{address}:", *(f"withdraw:{name}:{address}:" for name in PAYOUT_CONTRACTS)]
        await settle_signed(self.ops, node.account, prefixes)
