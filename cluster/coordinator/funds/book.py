"""Each account's balance as the farm's own transactions and the fees paid to it move it.

Read once per account when the coordinator starts; from then on every receipt the senders met (the
journals' ``tx_receipts``, the coordinator's and each round driver's: gas paid by the sender, value to the
recipient) and every fee and compensation the chain watch delivers (``TaskNodeSuccess``,
``TaskNodeCompensated``) move it, so no balance is read per round. Whatever else moves a balance (a
stake refunded, someone's transfer) is not counted: the book only ever errs low, and an account it
believes low is read again before it is topped up (``GasKeeper``).
"""

from __future__ import annotations

from collections.abc import Iterable

from cluster.chain.events import ChainEvent
from cluster.chain.task_events import NodeCompensated, TaskNodeSettled, task_event
from cluster.chain.tx_journal import TxJournal


class BalanceBook:
    def __init__(self, journals: list[TxJournal]):
        self._wei: dict[str, int] = {}  # by lower-case address
        self._journals: list[tuple[TxJournal, list[int]]] = []  # each with the last receipt row counted
        self._paid_position = (-1, -1)  # the last payment counted: the reader may deliver a page again
        for journal in journals:
            self.follow(journal)

    def follow(self, journal: TxJournal) -> None:
        """Count this journal's receipts from now on (those before are in the balances read)."""
        self._journals.append((journal, [journal.last_receipt_row()]))

    def seed(self, address: str, balance_wei: int) -> None:
        """A balance just read from the chain (at start, or to confirm one the book believes low)."""
        self._wei[address.lower()] = balance_wei

    def balance_wei(self, address: str, *, caught_up: bool = False) -> int | None:
        """What the account holds at least, by the book; None for an account the book does not follow.
        ``caught_up``: the caller called ``catch_up`` just before (a look at all accounts reads each
        journal once)."""
        if not caught_up:
            self.catch_up()
        return self._wei.get(address.lower())

    def catch_up(self) -> None:
        """Count the receipts the senders met since the last call (cheap: a range of each journal's rows)."""
        for journal, last_row in self._journals:
            self._count(journal, last_row)

    def _count(self, journal: TxJournal, last_row: list[int]) -> None:
        while receipts := journal.paid_receipts_after(last_row[0]):
            for receipt in receipts:
                last_row[0] = receipt.row
                sender, recipient = receipt.account.lower(), (receipt.to or "").lower()
                if sender in self._wei:
                    value = receipt.value_wei if receipt.status == "mined" else 0  # a revert keeps it
                    self._wei[sender] -= receipt.gas_used * receipt.gas_price_wei + value
                if receipt.status == "mined" and recipient in self._wei:
                    self._wei[recipient] += receipt.value_wei

    def observe(self, events: Iterable[ChainEvent]) -> None:
        """Fees and compensations paid to followed accounts, each event counted once."""
        for event in events:
            if event.position <= self._paid_position:
                continue
            typed = task_event(event)
            if isinstance(typed, TaskNodeSettled):
                node, amount_wei = typed.node, typed.fee_wei  # 0 unless paid
            elif isinstance(typed, NodeCompensated):
                node, amount_wei = typed.node, typed.amount_wei
            else:
                continue
            self._paid_position = event.position
            if node.lower() in self._wei:
                self._wei[node.lower()] += amount_wei
