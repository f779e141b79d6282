"""Top-ups: every node account keeps its gas reserve, paid from the operator account.

A node whose balance falls below the gas of its next transaction cannot commit or disclose: its task
times out, it loses QoS, and a withheld commitment is slashed, all for want of a few cents of gas. So:
- ``check`` (every poll) finds the active accounts the book believes below half their reserve, reads each
  once more (the book errs low) and brings those still low back to the reserve, all at once: the sender
  gives the operator's concurrent transactions consecutive nonces.
- ``ensure`` runs before every transaction a node signs (``ChainOps.gas_gate``): when the book says the
  node could not pay that transaction's gas at today's price, the node is topped up first. The reserve's
  floor (``MIN_RESERVE_TXS`` of the dearest transaction) makes this rare: ``check`` acts long before.
- Each top-up has its key, ``topup:{node}:{n}`` (the node's n-th in the journal); a restart first settles
  the top-ups a killed process left signed (the same signed bytes), then counts: none is sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection

from eth_account.signers.local import LocalAccount

from cluster.coordinator.chain_ops import LIFECYCLE_GAS_FLOOR, STEP_GAS_FLOORS, ChainOps
from cluster.coordinator.funds.book import BalanceBook
from cluster.coordinator.funds.resend import max_fee_per_gas_wei, settle_signed
from cluster.coordinator.funds.settings import FundsSettings
from cluster.failures import classify

log = logging.getLogger(__name__)
TOP_UP_BELOW = 0.5  # of the reserve: an account below is topped up back to the reserve
# The reserve pays at least this many of the dearest transaction, so that an account at the top-up's
# trigger (half the reserve) can still send three while its top-up is mined.
MIN_RESERVE_TXS = 6
ROUND_STEPS = ("submitTaskResultCommitment", "discloseTaskResult", "reportResultsUploaded")
OPERATOR_READ_EVERY_S = 30.0  # the operator account is funded from outside: its balance is read again


class GasKeeper:
    def __init__(self, ops: ChainOps, book: BalanceBook, operator: LocalAccount, settings: FundsSettings):
        self.ops = ops
        self.book = book
        self.operator = operator
        self.settings = settings
        self.num_topups = 0  # mined by this process
        self.last_failure: str | None = None  # why the last top-up failed, until one succeeds
        self.last_reserve_wei = settings.gas_reserve_wei  # as last computed (for the status)
        self._topping: dict[str, asyncio.Task[None]] = {}
        self._operator_read_at = -math.inf

    # -- what an account keeps -----------------------------------------------------------------------------

    async def max_fee_per_gas_wei(self) -> int:
        return await max_fee_per_gas_wei(self.ops)

    def dearest_tx_gas(self) -> int:
        return max(LIFECYCLE_GAS_FLOOR, *(self.ops.step_gas.limit(method) for method in STEP_GAS_FLOORS))

    async def reserve_wei(self) -> int:
        """What each node account keeps: the setting, the rounds' worth, or the floor, whichever is most."""
        fee = await self.max_fee_per_gas_wei()
        round_gas = sum(self.ops.step_gas.limit(method) for method in ROUND_STEPS)
        self.last_reserve_wei = max(
            self.settings.gas_reserve_wei,
            self.settings.gas_reserve_rounds * round_gas * fee,
            MIN_RESERVE_TXS * self.dearest_tx_gas() * fee,
        )
        return self.last_reserve_wei

    # -- start, checks, the gate ---------------------------------------------------------------------------

    async def settle_unfinished(self, addresses: Collection[str]) -> None:
        """Top-ups a killed process left signed: the same bytes are sent again or their receipt found,
        before any new top-up is counted."""
        prefixes = [f"topup:{address}:" for address in addresses]
        await settle_signed(self.ops, self.operator, prefixes)

    async def check(self, addresses: Collection[str]) -> None:
        """Top up, in the background, the accounts the book believes below half their reserve."""
        now = time.monotonic()
        if now - self._operator_read_at >= OPERATOR_READ_EVERY_S:
            self._operator_read_at = now
            self.book.catch_up()
            self.book.seed(self.operator.address, await self.ops.balance(self.operator.address))
        reserve = await self.reserve_wei()
        self.book.catch_up()  # once for all the accounts (a query per journal), not once per account
        due = [
            address for address in addresses
            if address not in self._topping
            and (balance := self.book.balance_wei(address, caught_up=True)) is not None
            and balance < reserve * TOP_UP_BELOW
        ]  # fmt: skip
        for address in due:
            self._start(address, reserve, reserve)

    async def ensure(self, address: str, gas: int, value_wei: int) -> None:
        """Return once ``address`` can pay ``gas`` at today's price and ``value_wei`` (by the book): at once,
        almost always. The operator account is not topped up; a top-up that fails lets the send go ahead,
        and the chain's refusal is classified (``cluster.failures.is_insufficient_funds``)."""
        if address == self.operator.address:
            return
        balance = self.book.balance_wei(address)
        if balance is None:
            return  # not followed: not one of the farm's nodes
        need_wei = gas * await self.max_fee_per_gas_wei() + value_wei
        if balance >= need_wei:
            return
        task = self._topping.get(address)
        if task is None:
            reserve = await self.reserve_wei()
            task = self._start(address, reserve + value_wei, need_wei)
        await asyncio.shield(task)

    def _start(self, address: str, target_wei: int, need_wei: int) -> asyncio.Task[None]:
        task = asyncio.create_task(self._top_up(address, target_wei, need_wei), name=f"topup-{address}")
        self._topping[address] = task
        task.add_done_callback(lambda _: self._topping.pop(address, None))
        return task

    async def _top_up(self, address: str, target_wei: int, need_wei: int) -> None:
        """Read the account (the book errs low), then bring it to ``target_wei`` if it holds less than
        ``need_wei``. A failure is logged and shown (``last_failure``), never raised."""
        try:
            self.book.catch_up()  # receipts met so far are in the read; the book counts only later ones
            balance = await self.ops.balance(address)
            self.book.seed(address, balance)
            if balance >= need_wei:
                return
            number = len(self.ops.sender.journal.with_prefix(f"topup:{address}:"))
            amount_wei = target_wei - balance
            sent = await self.ops.top_up(self.operator, address, amount_wei, number)
            self.num_topups += 1
            self.last_failure = None
            log.info("[funds] topped up node=%s wei=%d tx=%s", address, amount_wei, sent.tx_hash)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            if failure != self.last_failure:
                log.error("[funds] top-up failed node=%s (%s)", address, classify(exc).value, exc_info=exc)
            self.last_failure = failure

    async def close(self) -> None:
        tasks = list(self._topping.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the operator account ------------------------------------------------------------------------------

    def operator_balance_wei(self) -> int | None:
        return self.book.balance_wei(self.operator.address)

    def operator_low_wei(self, num_active: int, reserve_wei: int) -> int:
        """Below this the operator account is low: the setting, or one top-up of every active account."""
        if self.settings.operator_low_wei is not None:
            return self.settings.operator_low_wei
        return num_active * reserve_wei
