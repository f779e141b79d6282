"""What counts in the ledger, and once: entries made from the chain's events and the farm's own receipts.

Every entry carries the one thing that makes it happen once, its ``source``: ``log:<tx>:<index>`` for an
event (a page replayed after a crash brings the same log), ``gas:<tx>`` for a receipt's gas and
``value:<tx>`` for the money a transaction moved (a receipt met again, after a restart or a reorg's new
block, is the same transaction). The store keeps each source once.

- Events: ``TaskNodeSuccess`` (fee) and ``TaskNodeCompensated`` (compensation) of the Task contract,
  ``NodeSlashed`` (slashed) and ``NodeStakeRefunded`` (unstaked) of the Node contract, for the farm's nodes.
- Receipts (the sender's journal): the gas of every mined transaction, reverted and out-of-gas ones too
  (they were paid for); and, for a transaction that succeeded, the value its key's prefix says it moved:
  ``fund:``/``topup:`` from the operator to a node (topup, the node's), ``join:`` (staked),
  ``payout:``/``sweep:`` from a node to the payout address (payout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cluster.chain.contracts import Events
from cluster.chain.events import ChainEvent
from cluster.chain.tx_journal import PaidReceipt
from cluster.ledger.model import LedgerKind

# The events the ledger reads, by contract: the reader asks the chain for these topics only.
EVENT_KINDS: dict[tuple[str, str], tuple[LedgerKind, str, str]] = {
    # (contract, event) -> (kind, the argument naming the node, the argument holding the amount)
    ("Task", Events.TASK_NODE_SUCCESS): (LedgerKind.FEE, "node", "fee"),
    ("Task", Events.TASK_NODE_COMPENSATED): (LedgerKind.COMPENSATION, "node", "amount"),
    ("Node", Events.NODE_SLASHED): (LedgerKind.SLASHED, "node", "amount"),
    ("Node", Events.NODE_STAKE_REFUNDED): (LedgerKind.UNSTAKED, "node", "amount"),
}
# Journal key prefixes of the transactions that move value, and whose it is: the recipient's (``to``) or
# the sender's. Bring-up funding is ``fund:{node}:{generation}`` (cluster/coordinator/chain_ops.py).
VALUE_KINDS: dict[str, tuple[LedgerKind, bool]] = {
    "fund:": (LedgerKind.TOPUP, True),
    "topup:": (LedgerKind.TOPUP, True),
    "join:": (LedgerKind.STAKED, False),
    "payout:": (LedgerKind.PAYOUT, False),
    "sweep:": (LedgerKind.PAYOUT, False),
}


@dataclass(frozen=True, slots=True)
class Entry:
    source: str  # what makes it once (the module doc)
    account: str
    kind: LedgerKind
    amount_wei: int
    block_number: int
    day: str  # YYYY-MM-DD, UTC, of the block's time


def day_of(block_time_s: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(block_time_s))


def event_entries(events: Iterable[ChainEvent], is_ours: Callable[[str], bool]) -> list[Entry]:
    """The entries of a page of events: only those about the farm's accounts."""
    entries = []
    for event in events:
        known = EVENT_KINDS.get((event.contract, event.name))
        if known is None:
            continue
        kind, node_arg, amount_arg = known
        node, amount = event.args[node_arg], int(event.args[amount_arg])
        if not is_ours(node) or amount == 0:
            continue
        assert event.block_time_s is not None  # the LogPager fills it in
        entries.append(
            Entry(f"log:{event.tx_hash.lower()}:{event.log_index}", node, kind, amount, event.block_number,
                  day_of(event.block_time_s))
        )  # fmt: skip
    return entries


def receipt_entries(receipt: PaidReceipt, block_time_s: int) -> list[Entry]:
    """A receipt's gas, paid by its sender, and the value its transaction moved, if it succeeded."""
    tx, day, block = receipt.tx_hash.lower(), day_of(block_time_s), receipt.block_number
    gas_wei = receipt.gas_used * receipt.gas_price_wei
    entries = [Entry(f"gas:{tx}", receipt.account, LedgerKind.GAS, gas_wei, block, day)] if gas_wei else []
    if receipt.status != "mined" or receipt.value_wei == 0:
        return entries
    for prefix, (kind, is_recipients) in VALUE_KINDS.items():
        if receipt.key.startswith(prefix):
            account = receipt.to if is_recipients and receipt.to else receipt.account
            entries.append(Entry(f"value:{tx}", account, kind, receipt.value_wei, block, day))
            break
    return entries
