"""The ledger against the chain: one task on the real contracts and a real anvil (its base fee and tip make
every transaction cost gas), one of the farm's three nodes returning a wrong result so it is slashed.

Every amount the ledger holds, per day, account and kind, is found again from the chain alone: fees from
``TaskNodeSuccess``, slashes from ``NodeSlashed``, gas as gasUsed x effectiveGasPrice of every transaction
the farm's accounts sent, top-ups and stakes from those transactions' values; and every account's balance
is what the ledger says moved it. Then a restart that lost the ledger's cursor and receipts watermark (a
crash before they were stored) replays it all: nothing counts twice.

Not the devnet (tests/devnet/test_devnet.py, over two minutes): the coordinator's own fixtures run the same
coordinator, contracts and relay in seconds, and the wrong result is injected where a test can name it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from web3 import Web3

from cluster.chain.events import CursorStore
from cluster.coordinator.coordinator import Coordinator
from cluster.coordinator.round_state import Outcome
from cluster.ledger.entries import day_of
from cluster.ledger.follow import CURSOR_NAME
from cluster.ledger.model import LedgerAmounts, LedgerKind, LedgerTotals
from tests.coordinator.factories import (
    create_task,
    gpt_args,
    rounds_end,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner
from tests.faults import CorruptingRunner

OPERATOR_FUNDS_WEI = 5_000 * 10**18  # what the operator fixture sends it


def chain_ledger(w3: Web3, deployment, accounts: set[str], operator: str) -> dict[tuple, int]:
    """(day, account, kind) -> wei, from the chain alone: events, transactions and their receipts."""
    found: dict[tuple, int] = defaultdict(int)
    times: dict[int, int] = {}

    def day(block: int) -> str:
        if block not in times:
            times[block] = w3.eth.get_block(block)["timestamp"]
        return day_of(times[block])

    bound = deployment.bind(w3)
    start = deployment.block_number
    for log in bound.contract("Task").events.TaskNodeSuccess().get_logs(from_block=start):
        if log["args"]["node"] in accounts:
            found[(day(log["blockNumber"]), log["args"]["node"], LedgerKind.FEE)] += log["args"]["fee"]
    for log in bound.contract("Node").events.NodeSlashed().get_logs(from_block=start):
        if log["args"]["node"] in accounts:
            found[(day(log["blockNumber"]), log["args"]["node"], LedgerKind.SLASHED)] += log["args"]["amount"]
    for number in range(start + 1, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        times[number] = block["timestamp"]
        for tx in block["transactions"]:
            sender = tx["from"]
            if sender not in accounts | {operator}:
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            assert receipt["effectiveGasPrice"] > 0  # the gas is real
            found[(day(number), sender, LedgerKind.GAS)] += receipt["gasUsed"] * receipt["effectiveGasPrice"]
            if receipt["status"] == 1 and tx["value"]:
                to_node = sender == operator and tx["to"] in accounts
                kind = LedgerKind.TOPUP if to_node else LedgerKind.STAKED  # a node's only value: its join
                found[(day(number), tx["to"] if to_node else sender, kind)] += tx["value"]
    return dict(found)


def ledger_rows(coordinator: Coordinator) -> dict[tuple, int]:
    return {
        (row.day, row.account, kind): row.amounts[kind]
        for row in coordinator.ledger.store.rows(by_account=True)
        for kind in LedgerKind
        if row.amounts[kind]
    }


def test_the_ledger_equals_the_chain_with_a_slashed_node_and_a_replay_counts_once(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    args = gpt_args(tiny_lm_dir, seed=5)
    config = settings(anvil, deployment, relay, tmp_path, guard_own_results=False)
    runner = CorruptingRunner(LocalJobRunner(tmp_path), rounds={2})  # round 2's GPU returns wrong bytes

    async def run() -> tuple[dict[tuple, int], LedgerTotals, int, dict[str, LedgerAmounts]]:
        async with running_coordinator(config, operator, runner) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            await run_until(coordinator, rounds_end(coordinator, task_id))
            assert sorted(r.outcome for r in coordinator.store.of_task(task_id)) == sorted(
                [Outcome.PAID, Outcome.PAID, Outcome.SLASHED]
            )
            await coordinator.ledger.poll()  # what the background follow would count within seconds
            totals = coordinator.status().ledger
            by_account: dict[str, LedgerAmounts] = defaultdict(LedgerAmounts)
            for row in coordinator.ledger.store.rows(by_account=True):
                by_account[row.account] += row.amounts
            return ledger_rows(coordinator), totals, coordinator.ledger.store.num_entries(), by_account

    rows, totals, num_entries, by_account = asyncio.run(run())
    nodes = [account for account in by_account if account != operator.operator.address]
    assert len(nodes) == 3
    chain = chain_ledger(w3, deployment, set(nodes), operator.operator.address)
    assert rows == chain
    farm = totals.farm
    assert farm.slashed_wei == 400 * 10**18 and farm.fee_wei > 0 and farm.gas_wei > 0
    assert farm.net_of_gas_wei == farm.fee_wei - farm.gas_wei
    # every balance is what the ledger says moved it (the nodes started empty; a slash moves a stake)
    for node in nodes:
        assert w3.eth.get_balance(node) == by_account[node].balance_change_wei
    operator_gas = by_account[operator.operator.address].gas_wei
    assert w3.eth.get_balance(operator.operator.address) == OPERATOR_FUNDS_WEI - operator_gas - farm.topup_wei

    # A crash lost the ledger's progress, not its entries: the restart reads every event and receipt again.
    cursors = CursorStore(tmp_path / "cursor.db")
    cursors.set(CURSOR_NAME, deployment.block_number)
    cursors.close()

    async def replay() -> tuple[dict[tuple, int], LedgerTotals, int]:
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path), join=False) as coordinator:
            store = coordinator.ledger.store
            store.add([], receipts_row=0)
            await coordinator.ledger.poll()
            assert store.receipts_row() > 0
            return ledger_rows(coordinator), coordinator.status().ledger, store.num_entries()

    assert asyncio.run(replay()) == (rows, totals, num_entries)
