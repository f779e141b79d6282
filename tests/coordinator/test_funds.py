"""The operator's money on the real chain (anvil: every transaction pays a 1 gwei tip over the base fee),
the real contracts and the real sender: node accounts kept in gas from the operator account, earnings
swept to the payout address exactly once across a kill, and accounts retired with their stakes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter

from eth_account import Account
from web3 import Web3

from cluster.chain.accounts import OperatorKeys
from cluster.chain.contracts import NodeStatus
from cluster.coordinator.funds.retire import Phase
from cluster.coordinator.funds.settings import FundsSettings
from cluster.coordinator.metrics import FarmMetrics
from cluster.coordinator.round_state import Outcome
from cluster.status.render import render_summary
from tests.coordinator.crash_runner import CRASH_EXIT_CODE
from tests.coordinator.factories import (
    CARD,
    FUNDER,
    create_task,
    gpt_args,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner
from tests.coordinator.test_bring_up import run_farm

CNX = 10**18
MIN_FEE = 10**15  # the Task contract's minimum: a node earns about as much as its round's gas
ALMOST_NOTHING = 2 * 10**14  # a commitment's gas, not a disclosure's (1.3M gas at 1 gwei)


def set_balance(w3: Web3, address: str, wei: int) -> None:
    w3.provider.make_request("anvil_setBalance", [address, hex(wei)])


def transactions_since(w3: Web3, first_block: int) -> list[dict]:
    """Every transaction mined from ``first_block`` on, with its receipt's status."""
    found = []
    for number in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            found.append({**tx, "status": w3.eth.get_transaction_receipt(tx["hash"])["status"]})
    return found


def gauge(metrics: FarmMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_node_accounts_that_start_with_almost_nothing_never_fail_for_gas_and_a_low_operator_alerts(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    config = settings(anvil, deployment, relay, tmp_path / "state")
    runner = LocalJobRunner(tmp_path)
    nodes = [operator.node(i).address for i in range(3)]
    low_wei = 1 * CNX

    async def scenario():
        async with running_coordinator(config, operator, runner):
            pass  # joined, then the farm stops
        for node in nodes:  # the accounts' gas spent: not enough for one disclosure
            set_balance(w3, node, ALMOST_NOTHING)
        set_balance(w3, operator.operator.address, low_wei + MIN_FEE)  # above its alert, not for long
        first_block = w3.eth.block_number + 1
        funds = FundsSettings(gas_reserve_wei=0, operator_low_wei=low_wei)  # the reserve: its floor
        async with running_coordinator(dataclasses.replace(config, funds=funds), operator, runner) as farm:
            before = farm.status()
            task_ids = []
            for seed in (1, 2, 3):
                args = gpt_args(tiny_lm_dir, seed=seed)
                task_ids.append(create_task(w3, deployment, args, fee=MIN_FEE))
                await upload(relay, task_ids[-1], args)

            def all_paid() -> bool:
                rows = [r for t in task_ids for r in farm.store.of_task(t)]
                return len(rows) == 9 and all(r.outcome is Outcome.PAID for r in rows)

            await run_until(farm, all_paid)
            return first_block, before, farm.status(), [r for t in task_ids for r in farm.store.of_task(t)]

    first_block, before, after, rows = asyncio.run(scenario())
    sent = transactions_since(w3, first_block)
    by_nodes = [tx for tx in sent if tx["from"] in nodes]
    topups = Counter(tx["to"] for tx in sent if tx["from"] == operator.operator.address)
    assert by_nodes and all(tx["status"] == 1 for tx in by_nodes)  # not one failed, for gas or otherwise
    assert all(r.failure_code is None for r in rows)
    assert after.funds is not None and set(topups) == set(nodes)
    assert after.funds.num_topups == sum(topups.values())
    assert all(w3.eth.get_balance(node) >= after.funds.gas_reserve_wei // 2 for node in nodes)
    # The operator account paid the top-ups and fell below its alert (still with funds: nothing failed).
    assert before.funds is not None and not before.funds.is_operator_low
    assert not any("operator account" in alert for alert in before.alerts)
    assert after.funds.is_operator_low and 0 < w3.eth.get_balance(operator.operator.address) < low_wei
    assert any(f"operator account {operator.operator.address} holds" in alert for alert in after.alerts)
    assert "operator account" in render_summary(after)
    metrics = FarmMetrics()
    metrics.update(after, {}, [])  # what the rule HeliumOperatorBalanceLow compares
    assert gauge(metrics, "helium_operator_balance_cnx") < gauge(metrics, "helium_operator_low_balance_cnx")


def give_credit(w3: Web3, deployment, account: str, amount_wei: int) -> None:
    """Make the Task contract owe ``account`` a refused payment (``credits``/``totalCredits``, and the
    balance behind them), as a node that once refused its fee would be owed: the slot of the mapping is
    found by writing and reading back, the contract itself is the real one."""
    task = deployment.bind(w3).contract("Task")

    def write(slot: bytes, value: int) -> None:
        word = "0x" + value.to_bytes(32, "big").hex()
        w3.provider.make_request("anvil_setStorageAt", [task.address, "0x" + slot.hex(), word])

    for base in range(64):
        slot = Web3.keccak(bytes(12) + bytes.fromhex(account[2:]) + base.to_bytes(32, "big"))
        write(slot, amount_wei)
        if task.functions.credits(account).call() == amount_wei:
            total = task.functions.totalCredits().call() + amount_wei
            write((base + 1).to_bytes(32, "big"), total)  # declared next in Payouts
            assert task.functions.totalCredits().call() == total
            set_balance(w3, task.address, w3.eth.get_balance(task.address) + amount_wei)
            return
        write(slot, 0)
    raise AssertionError("Task.credits not found in its first 64 slots")


NUM_PAID = 6
RESERVE = 10**17
EARNED = 3 * CNX  # each account holds this beside its stake and reserve
CREDIT = 7 * 10**17  # what Task owes the first account


def test_payout_moves_every_balance_above_its_reserve_once_across_a_kill(
    w3, anvil, deployment, relay, tmp_path
):
    _, mnemonic = Account.create_with_mnemonic()
    keys = OperatorKeys.from_mnemonic(mnemonic)
    w3.eth.send_transaction({"from": FUNDER.address, "to": keys.operator.address, "value": 100 * CNX})
    nodes = [keys.node(i).address for i in range(NUM_PAID)]
    for node in nodes:  # as if earned: the bring-up funds none of them (each holds its stake and more)
        w3.eth.send_transaction({"from": FUNDER.address, "to": node, "value": 400 * CNX + RESERVE + EARNED})
    give_credit(w3, deployment, nodes[0], CREDIT)
    payout = Account.create().address
    funds = FundsSettings(gas_reserve_wei=RESERVE, payout_address=payout, sweep_concurrency=2)
    config = settings(anvil, deployment, relay, tmp_path / "state", cards=(CARD,) * NUM_PAID, funds=funds)

    async def dry_run():
        async with running_coordinator(config, keys, LocalJobRunner(tmp_path)) as farm:
            block = w3.eth.block_number
            report = await farm.funds.payout(is_dry_run=True)
            assert w3.eth.block_number == block  # nothing sent
            return report

    planned = asyncio.run(dry_run())
    assert [line.node for line in planned.lines] == nodes and planned.errors == []
    assert [line.withdrawn_wei for line in planned.lines] == [CREDIT] + [0] * (NUM_PAID - 1)
    assert all(EARNED - 10**16 < line.amount_wei - line.withdrawn_wei < EARNED for line in planned.lines)

    first_block = w3.eth.block_number + 1
    runner_config = {
        "endpoints": config.endpoints.model_dump(), "state_dir": str(config.state_dir),
        "cards": [CARD.join_args] * NUM_PAID, "mnemonic": mnemonic, "task_ids": [], "timeout_s": 60,
        "funds": dataclasses.asdict(funds), "payout": "sweep",
    }  # fmt: skip
    killed = run_farm({**runner_config, "crash_at": "swept", "crash_after": 3}, tmp_path / "kill.json")
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    swept_before = sum(tx["to"] == payout for tx in transactions_since(w3, first_block))
    rerun = run_farm(runner_config, tmp_path / "again.json")
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    sent = transactions_since(w3, first_block)
    sweeps = Counter(tx["from"] for tx in sent if tx["to"] == payout)
    assert 3 <= swept_before < NUM_PAID  # killed in the middle, not before, not after
    assert sweeps == dict.fromkeys(nodes, 1)  # each swept once, across the kill
    assert all(tx["status"] == 1 for tx in sent)
    assert w3.eth.get_balance(payout) == sum(tx["value"] for tx in sent if tx["to"] == payout)
    assert w3.eth.get_balance(payout) > NUM_PAID * (EARNED - 10**16) + CREDIT
    for node in nodes:  # what stays is the reserve and the dust of the sweep's gas
        assert RESERVE <= w3.eth.get_balance(node) < RESERVE + 10**15, node
    assert deployment.bind(w3).contract("Task").functions.credits(nodes[0]).call() == 0
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert sum(line["amount_wei"] > 0 for line in report["lines"]) == NUM_PAID - swept_before


def test_retire_all_quits_every_account_with_its_stake_and_sweeps_it_losing_no_task(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    payout = Account.create().address
    funds = FundsSettings(payout_address=payout)
    config = settings(anvil, deployment, relay, tmp_path / "state", funds=funds)
    runner = LocalJobRunner(tmp_path)
    nodes = [operator.node(i).address for i in range(3)]
    node_contract = deployment.bind(w3).contract("Node")

    async def scenario():
        async with running_coordinator(config, operator, runner) as farm:
            runner.gate.clear()  # the task's jobs wait: it is running when the farm is retired
            args = gpt_args(tiny_lm_dir, seed=4)
            task_id = create_task(w3, deployment, args, fee=CNX)
            await upload(relay, task_id, args)
            await run_until(farm, lambda: len(farm.store.of_task(task_id)) == 3)
            assert farm.funds.retire(farm.accounts) == nodes
            await run_until(farm, lambda: set(farm.funds.retirement.phases.values()) == {Phase.DRAINING})
            statuses = {NodeStatus(node_contract.functions.nodeStatus(n).call()) for n in nodes}
            runner.gate.set()
            await run_until(farm, lambda: set(farm.funds.retirement.phases.values()) == {Phase.RETIRED})
            return statuses, farm.status(), farm.store.of_task(task_id)

    draining, status, rows = asyncio.run(scenario())
    assert draining == {NodeStatus.PENDING_PAUSE}  # paused while busy: the task went on
    assert [r.outcome for r in rows] == [Outcome.PAID] * 3  # no task lost
    info = node_contract.get_function_by_name("nodeInfo").abi["outputs"][0]["components"]
    stake_index = [c["name"] for c in info].index("stake")
    for node in nodes:
        assert NodeStatus(node_contract.functions.nodeStatus(node).call()) is NodeStatus.QUIT
        assert node_contract.functions.nodeInfo(node).call()[stake_index] == 0  # refunded
        assert w3.eth.get_balance(node) < 10**15  # swept: the dust of its sweep's gas stays
    # the stakes, the reserves and the task's fee (1 CNX among the three) reached the payout address
    assert 3 * 400 * CNX + CNX - 10**16 < w3.eth.get_balance(payout) < 3 * 400 * CNX + CNX + 3 * 10**17
    assert status.funds is not None and status.funds.retiring == {"retired": 3}

    async def restart():  # the retired accounts stay out: nothing joins, nothing is swept again
        async with running_coordinator(config, operator, runner, join=False) as farm:
            return await farm.join_nodes()

    block = w3.eth.block_number
    assert asyncio.run(restart()) == {} and w3.eth.block_number == block
