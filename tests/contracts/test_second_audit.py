"""The second audit's findings (issue 25), a test or more each; each failed on the contracts at f88b13f.

1. the withholding slash aimed at honest nodes: no commitment after the deadline, and the last
   commitment and the success each leave the next step responseWindow before a cancel;
2. squatting with phantom nodes: a queued task pays rent for its time in the queue, however it leaves;
3. queued tasks spread over VRAM groups taxed every dispatch: tasks no available node could run cost an
   honest lifecycle and a join nothing;
4. false "no arguments" reports: the relay's receipt refutes them and the reporters are slashed;
5. deploy.py's stake bound is the contract's, 2**96 - 1 (tests/contracts/test_deploy.py).
"""

from __future__ import annotations

from statistics import median
from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from cluster.chain.contracts import (
    DEFAULT_QUEUE_RENT_BPS_PER_HOUR,
    DEFAULT_RESPONSE_WINDOW_S,
    AbortReason,
    NodeStatus,
    TaskStatus,
    TaskType,
)
from cluster.protocol.receipts import sign_receipt
from tests.contracts.net import ETHER, GPU_A, Net

SD, GPT = TaskType.SD, TaskType.GPT
TIMEOUT_S = 15 * 60
ARGUMENTS_WAIT_S = 2 * 60
WINDOW_S = DEFAULT_RESPONSE_WINDOW_S
STAKE = 400 * ETHER
RIGHT, WRONG = keccak(b"right"), keccak(b"wrong")
PHANTOM = ("Phantom GPU", 4095, "any-runtime")  # the largest VRAM a node may declare
SECONDS_PER_HOUR = 3600
BPS = 10_000


def start_gpt_task(net: Net, fee: int = ETHER) -> tuple[int, list[str], str]:
    net.join_all(net.accounts[3:6])
    creator = net.accounts[1]
    task_id, _ = net.create_task(creator, GPT, fee)
    return task_id, net.selected(task_id), creator


def block_time(net: Net, receipt: Any) -> int:
    return net.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def in_one_block(net: Net, calls: list[tuple[Any, str]]) -> list[Any]:
    """Sends the calls (each with its sender) unestimated, mines them in one block, in order."""
    net.w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = [call.transact({"from": sender, "gas": 1_500_000}) for call, sender in calls]
        net.w3.provider.make_request("evm_mine", [])
    finally:
        net.w3.provider.make_request("evm_setAutomine", [True])
    receipts = [net.w3.eth.wait_for_transaction_receipt(h) for h in hashes]
    assert len({r["blockNumber"] for r in receipts}) == 1
    for (_, sender), receipt in zip(calls, receipts, strict=True):
        net.ledger.record_gas(sender, receipt)
    return receipts


# -- 1. the withholding slash needs a real chance to disclose --------------------------------------------


@pytest.mark.parametrize("late_step", ["commit", "error"])
def test_a_step_after_the_deadline_and_a_cancel_in_one_block_slash_no_honest_node(net: Net, late_step: str):
    task_id, nodes, _creator = start_gpt_task(net)
    honest, attacker = nodes[:2], nodes[2]
    net.commit(task_id, 0, RIGHT)
    net.commit(task_id, 1, RIGHT)
    net.mine_after(TIMEOUT_S + 1)
    fns = net.task.functions
    step = (
        fns.submitTaskResultCommitment(task_id, 2, keccak(b"anything"))
        if late_step == "commit"
        else fns.reportTaskError(task_id, 2)
    )
    step_receipt, cancel_receipt = in_one_block(net, [(step, attacker), (fns.cancelTask(task_id), attacker)])
    assert cancel_receipt["status"] == 1
    assert net.event_args(cancel_receipt, "TaskNodeSlashed") == []
    assert step_receipt["status"] == 0  # DeadlinePassed: no commitment or report after the deadline
    assert [net.status(n) for n in honest] == [NodeStatus.AVAILABLE] * 2
    assert all(net.ledger.received(n) == -STAKE for n in honest)  # still staked, nothing slashed
    scores = {e["node"]: e["taskScore"] for e in net.event_args(cancel_receipt, "TaskScoreRecorded")}
    assert scores == {honest[0]: 20, honest[1]: 18, attacker: 0}  # the late node is the one that lost


def test_a_step_after_the_deadline_is_refused_with_the_deadline(net: Net):
    task_id, nodes, _creator = start_gpt_task(net)
    net.mine_after(TIMEOUT_S + 1)
    deadline = net.get_task(task_id)["deadline"]
    fns = net.task.functions
    for call in (fns.submitTaskResultCommitment(task_id, 0, RIGHT), fns.reportTaskError(task_id, 0)):
        err = net.reverts(call, nodes[0])
        assert err.name == "DeadlinePassed" and err.error_args["deadline"] == deadline
    assert net.reverts(fns.reportNoArguments(task_id, 0), nodes[0]).name == "DeadlinePassed"


def test_the_last_commitment_leaves_the_others_the_response_window_to_disclose(net: Net):
    task_id, nodes, creator = start_gpt_task(net)
    net.commit(task_id, 0, RIGHT)
    net.commit(task_id, 1, RIGHT)
    deadline = net.get_task(task_id)["deadline"]
    net.mine_after(TIMEOUT_S - 10)
    receipt = net.commit(task_id, 2, WRONG)  # ten seconds before the deadline
    moved_to = block_time(net, receipt) + WINDOW_S
    assert moved_to > deadline
    assert net.event_args(receipt, "TaskDeadlineMoved") == [{"taskId": task_id, "deadline": moved_to}]
    net.mine_after(20)  # past the old deadline: the honest nodes still have the window
    err = net.reverts(net.task.functions.cancelTask(task_id), nodes[2])
    assert err.name == "DeadlineNotPassed" and err.error_args["deadline"] == moved_to
    net.disclose(task_id, 0)
    net.disclose(task_id, 1)  # decides: round 0 is the result node
    net.upload(task_id, 0, nodes[0])
    net.mine_after(WINDOW_S + 1)
    receipt = net.cancel(task_id, creator)  # round 2 withheld its wrong result through the whole window
    assert net.event_args(receipt, "TaskNodeSlashed") == [{"taskId": task_id, "node": nodes[2]}]
    assert net.ledger.received(nodes[0]) == 40 * ETHER // 100 - STAKE
    assert net.ledger.received(nodes[1]) == 36 * ETHER // 100 - STAKE


def test_a_success_near_the_deadline_leaves_the_result_node_the_window_to_upload(net: Net):
    task_id, nodes, creator = start_gpt_task(net)
    for r in range(3):
        net.commit(task_id, r, RIGHT)
    net.mine_after(TIMEOUT_S - 5)
    net.disclose(task_id, 0)
    receipt = net.disclose(task_id, 1)  # the success, a few seconds before the deadline
    moved_to = block_time(net, receipt) + WINDOW_S
    assert net.event_args(receipt, "TaskDeadlineMoved") == [{"taskId": task_id, "deadline": moved_to}]
    net.mine_after(10)
    # The creator, who has its result once the files are up, cannot cut the result node short.
    assert net.reverts(net.task.functions.cancelTask(task_id), creator).name == "DeadlineNotPassed"
    receipt = net.upload(task_id, 0, nodes[0])
    assert net.event_args(receipt, "TaskNodeSuccess")[0]["fee"] == 40 * ETHER // 100


def test_an_early_last_commitment_moves_no_deadline(net: Net):
    task_id, _nodes, _creator = start_gpt_task(net)
    deadline = net.get_task(task_id)["deadline"]
    receipts = net.run(task_id, [RIGHT] * 3)
    assert all(net.event_args(r, "TaskDeadlineMoved") == [] for r in receipts)
    assert net.get_task(task_id)["deadline"] == deadline


# -- 2. squatting pays rent for the time it holds the queue ----------------------------------------------


def join_phantoms(net: Net, accounts: list[str]) -> None:
    """Three nodes of the largest VRAM, paused: tasks at that VRAM count as "could run some day"."""
    net.join_paused(accounts, PHANTOM)


def rent_due(fee: int, held_s: int) -> int:
    return fee * held_s * DEFAULT_QUEUE_RENT_BPS_PER_HOUR // (BPS * SECONDS_PER_HOUR)


@pytest.mark.parametrize("afterwards", ["cancel", "evicted", "started on its own nodes"])
def test_squatting_with_phantom_nodes_pays_rent_for_the_time_it_holds_the_queue(net: Net, afterwards: str):
    honest_creator, attacker = net.accounts[1], net.accounts[2]
    phantoms = net.accounts[10:13]
    net.join_all(net.accounts[3:6], GPU_A)
    join_phantoms(net, phantoms)
    net.tx(net.queue.functions.setSizeLimit(4), net.owner)
    fee, held_s = ETHER, 30 * 60
    queued = {}  # task id -> the block time it was queued
    for i in range(4):
        task_id, receipt = net.create_task(attacker, SD, fee, vram_limit=4095 - i)
        queued[task_id] = block_time(net, receipt)
    # The queue is full of the attacker's tasks: an honest task of a lower value is refused.
    refused = net.reverts(
        net.task.functions.createTask(SD, b"\1" * 32, b"\0" * 32, 48, 1), honest_creator, 10**16
    )
    assert refused.name == "TaskFeeTooLow"
    net.mine_after(held_s)
    receipts = []
    if afterwards == "cancel":
        receipts = [net.cancel(task_id, attacker) for task_id in queued]
    elif afterwards == "evicted":
        for _ in queued:  # honest tasks of a higher value take the places, one by one
            receipts.append(net.create_task(honest_creator, SD, 2 * fee, vram_limit=48)[1])
    else:
        receipts = [net.resume(p) for p in phantoms]  # the first queued task starts on the phantoms
    paid = [e for r in receipts for e in net.event_args(r, "QueueRentPaid")]
    assert paid, "no rent was paid"
    for event in paid:
        left_at = block_time(net, next(r for r in receipts if event in net.event_args(r, "QueueRentPaid")))
        held = left_at - queued[event["taskId"]]
        assert held >= held_s
        assert event["amount"] == rent_due(fee, held) and event["treasury"] == net.owner
    if afterwards != "started on its own nodes":
        for p in phantoms:
            net.tx(net.node.functions.quit(), p)
        # Stakes back, fees back but the rent: what holding four places for half an hour cost.
        assert net.ledger.received(attacker) == -sum(e["amount"] for e in paid)
        assert net.ledger.received(net.owner) == sum(e["amount"] for e in paid)


def test_queue_rent_is_proportionate_to_the_time_held_and_owner_settable(net: Net):
    attacker = net.accounts[2]
    join_phantoms(net, net.accounts[10:13])
    rents = []
    for held_s in (10 * 60, 20 * 60):
        task_id, receipt = net.create_task(attacker, SD, ETHER, vram_limit=4095)
        net.mine_after(held_s)
        cancel = net.cancel(task_id, attacker)
        held = block_time(net, cancel) - block_time(net, receipt)
        (paid,) = net.event_args(cancel, "QueueRentPaid")
        assert paid["amount"] == rent_due(ETHER, held)
        assert net.event_args(cancel, "TaskFeeRefunded")[0]["amount"] == ETHER - paid["amount"]
        rents.append((paid["amount"], held))
    (first, first_s), (second, second_s) = rents
    assert first * second_s == pytest.approx(second * first_s, rel=1e-9)  # per second, the same rent
    assert net.reverts(net.task.functions.setQueueRent(0), attacker).name == "NotOwner"
    assert net.reverts(net.task.functions.setQueueRent(100_001), net.owner).name == "InvalidQueueRent"
    net.tx(net.task.functions.setQueueRent(0), net.owner)
    task_id, _ = net.create_task(attacker, SD, ETHER, vram_limit=4095)
    net.mine_after(3600)
    assert net.event_args(net.cancel(task_id, attacker), "QueueRentPaid") == []


def test_a_queued_task_that_starts_pays_its_rent_from_the_fee_the_nodes_share(net: Net):
    creator = net.accounts[1]
    nodes = net.accounts[3:6]
    net.join_paused(nodes)
    task_id, receipt = net.create_task(creator, GPT, ETHER)
    net.mine_after(SECONDS_PER_HOUR)
    net.resume(nodes[0])
    net.resume(nodes[1])
    start = net.resume(nodes[2])
    rent = rent_due(ETHER, block_time(net, start) - block_time(net, receipt))
    assert net.event_args(start, "QueueRentPaid") == [
        {"taskId": task_id, "treasury": net.owner, "amount": rent}
    ]
    assert net.get_task(task_id)["fee"] == ETHER - rent
    receipts = net.run(task_id, [RIGHT] * 3)
    selected = net.selected(task_id)
    receipts.append(net.upload(task_id, 0, selected[0]))
    paid = {e["node"]: e["fee"] for r in receipts for e in net.event_args(r, "TaskNodeSuccess")}
    fee = ETHER - rent  # the shares of rounds scoring 18 and 12; the result node, last, the rest
    assert paid == {
        selected[1]: fee * 18 // 50,
        selected[2]: fee * 12 // 50,
        selected[0]: fee - fee * 18 // 50 - fee * 12 // 50,
    }


# -- 3. tasks no available node could run cost a dispatch nothing ----------------------------------------


def gpt_lifecycle_gas(net: Net, creator: str) -> int:
    task_id, receipt = net.create_task(creator, GPT, ETHER)
    total = receipt["gasUsed"]
    nodes = net.selected(task_id)
    total += sum(net.commit(task_id, r, RIGHT)["gasUsed"] for r in range(3))
    total += sum(net.disclose(task_id, r)["gasUsed"] for r in range(3))
    result_round = net.get_task(task_id)["resultRound"]
    return total + net.upload(task_id, result_round, nodes[result_round])["gasUsed"]


def test_an_honest_lifecycle_and_a_join_cost_the_same_with_50_phantom_held_tasks_queued(net: Net):
    honest_creator, attacker = net.accounts[1], net.accounts[2]
    net.join_all(net.accounts[3:6], GPU_A)
    join_phantoms(net, net.accounts[10:13])
    for _ in range(8):  # every slot an honest task writes, written once
        gpt_lifecycle_gas(net, honest_creator)
    before = median(gpt_lifecycle_gas(net, honest_creator) for _ in range(5))
    join_before = net.join(net.accounts[6], GPU_A)["gasUsed"]
    net.tx(net.node.functions.quit(), net.accounts[6])
    # 50 tasks in 50 VRAM groups (25 SD, 25 GPT) that only the paused phantoms could ever run.
    for i in range(50):
        net.create_task(attacker, SD if i % 2 else GPT, 10**15, vram_limit=4095 - i)
    assert net.view(net.queue, "size") == 50
    after = median(gpt_lifecycle_gas(net, honest_creator) for _ in range(5))
    join_after = net.join(net.accounts[7], GPU_A)["gasUsed"]
    assert after <= 1.10 * before, (before, after)
    assert join_after <= 1.10 * join_before, (join_before, join_after)
    assert net.view(net.queue, "size") == 50  # still there, paying rent


def test_a_node_too_small_for_every_queued_task_does_not_ask_the_queue(net: Net):
    creator = net.accounts[1]
    join_phantoms(net, net.accounts[10:13])
    net.create_task(creator, SD, ETHER, vram_limit=4000)
    assert net.view(net.queue, "queueFloor") == 4000
    receipt = net.join(net.accounts[3], GPU_A)  # 24 GB: cannot make a 4,000 GB task runnable
    assert not any(e.contract == "TaskQueue" for e in net.events(receipt))
    # A phantom resuming is big enough: the queue is asked (and two paused ones are still not three).
    net.resume(net.accounts[10])
    net.resume(net.accounts[11])
    receipt = net.resume(net.accounts[12])
    assert [e.name for e in net.events(receipt) if e.contract == "TaskQueue"] == ["TaskDequeued"]
    assert net.view(net.queue, "queueFloor") == 2**256 - 1


# -- 4. a false "no arguments" report is refuted by the relay's receipt ----------------------------------


@pytest.fixture
def relay_key(net: Net):
    relay = Account.create()
    net.tx(net.task.functions.setRelaySigner(relay.address), net.owner)
    return relay.key


def receipt_args(net: Net, key: bytes, task_id: int, stored_at: int) -> tuple[int, int, bytes]:
    receipt = sign_receipt(key, net.w3.eth.chain_id, net.task.address, task_id, stored_at)
    return task_id, receipt.stored_at_s, bytes.fromhex(receipt.signature[2:])


def test_a_false_no_arguments_report_costs_the_reporters_more_than_it_would_have_earned(net: Net):
    task_id, nodes, creator = start_gpt_task(net)
    started_at = net.get_task(task_id)["startedAt"]
    honest, farm = nodes[0], nodes[1:]
    net.commit(task_id, 0, RIGHT)  # the arguments were there: the honest node ran the task
    net.mine_after(ARGUMENTS_WAIT_S)
    reports = [net.tx(net.task.functions.reportNoArguments(task_id, r), farm[r - 1]) for r in (1, 2)]
    # Two reports alone pay nothing and end nothing: the window is open for the receipt.
    for name in ("TaskAborted", "TaskNodeCompensated", "TaskFeeRefunded"):
        assert [e for r in reports for e in net.event_args(r, name)] == [], name
    assert all(net.ledger.received(n) == -STAKE for n in farm)
    # The application uploaded the arguments as the task started; the relay's receipt says so.
    relay = Account.create()
    net.tx(net.task.functions.setRelaySigner(relay.address), net.owner)
    relay_key = relay.key
    receipt = net.tx(
        net.task.functions.refuteNoArguments(*receipt_args(net, relay_key, task_id, started_at)), creator
    )
    assert net.event_args(receipt, "TaskNoArgumentsRefuted") == [{"taskId": task_id, "storedAt": started_at}]
    assert net.event_args(receipt, "TaskAborted") == [
        {"taskId": task_id, "reason": AbortReason.NO_ARGUMENTS_REFUTED}
    ]
    assert {e["node"] for e in net.event_args(receipt, "TaskNodeSlashed")} == set(farm)
    assert [e["amount"] for e in net.event_args(receipt, "NodeSlashed")] == [STAKE, STAKE]
    compensation = ETHER // 10
    assert net.event_args(receipt, "TaskNodeCompensated") == [
        {"taskId": task_id, "node": honest, "amount": compensation}
    ]
    assert net.ledger.received(creator) == -compensation
    assert [net.status(n) for n in farm] == [NodeStatus.QUIT] * 2
    assert net.status(honest) == NodeStatus.AVAILABLE
    # What each false report would have earned had it stood, against what it cost.
    for reporter in farm:
        assert -net.ledger.received(reporter) > compensation
    assert net.task_status(task_id) == TaskStatus.NONE


def test_a_lone_false_report_that_would_stall_the_task_is_refuted_too(net: Net, relay_key):
    task_id, nodes, creator = start_gpt_task(net)
    started_at = net.get_task(task_id)["startedAt"]
    net.commit(task_id, 0, RIGHT)
    net.commit(task_id, 1, RIGHT)
    net.mine_after(ARGUMENTS_WAIT_S)
    net.tx(net.task.functions.reportNoArguments(task_id, 2), nodes[2])  # no commitment can follow
    args = receipt_args(net, relay_key, task_id, started_at + ARGUMENTS_WAIT_S // 2)
    receipt = net.tx(net.task.functions.refuteNoArguments(*args), nodes[0])  # an honest node may send it
    assert net.event_args(receipt, "TaskNodeSlashed") == [{"taskId": task_id, "node": nodes[2]}]
    assert [e["node"] for e in net.event_args(receipt, "TaskNodeCompensated")] == nodes[:2]
    assert net.ledger.received(creator) == -2 * (ETHER // 10)


def test_only_the_relay_s_timely_receipt_refutes(net: Net, relay_key):
    task_id, nodes, creator = start_gpt_task(net)
    started_at = net.get_task(task_id)["startedAt"]
    refute = net.task.functions.refuteNoArguments
    err = net.reverts(refute(*receipt_args(net, relay_key, task_id, started_at)), creator)
    assert err.name == "NothingToRefute"
    net.mine_after(ARGUMENTS_WAIT_S)
    net.tx(net.task.functions.reportNoArguments(task_id, 0), nodes[0])
    latest = started_at + ARGUMENTS_WAIT_S // 2
    err = net.reverts(refute(*receipt_args(net, relay_key, task_id, latest + 1)), creator)
    assert err.name == "ReceiptTooLate" and err.error_args["latest"] == latest
    stranger = Account.create().key
    assert (
        net.reverts(refute(*receipt_args(net, stranger, task_id, latest)), creator).name == "InvalidReceipt"
    )
    other_task = receipt_args(net, relay_key, task_id + 1, latest)
    assert net.reverts(refute(task_id, *other_task[1:]), creator).name == "InvalidReceipt"
    _, stored_at, signature = receipt_args(net, relay_key, task_id, latest)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = signature[:32] + (n - int.from_bytes(signature[32:64], "big")).to_bytes(32, "big")
    high_s += bytes([55 - signature[64]])  # the twin signature: (r, n - s, the other v)
    assert net.reverts(refute(task_id, stored_at, high_s), creator).name == "InvalidReceipt"
    net.tx(net.task.functions.setRelaySigner("0x" + "00" * 20), net.owner)
    assert net.reverts(refute(task_id, stored_at, signature), creator).name == "InvalidReceipt"
    assert net.reverts(net.task.functions.setRelaySigner(creator), creator).name == "NotOwner"


def test_the_receipt_domain_is_eip712_for_this_contract(net: Net):
    from cluster.protocol.receipts import domain_separator

    expected = domain_separator(net.w3.eth.chain_id, net.task.address)
    assert bytes(net.task.functions.receiptDomainSeparator().call()) == expected


def test_standing_reports_end_the_task_only_after_the_window_and_the_response_window_is_settable(net: Net):
    task_id, nodes, creator = start_gpt_task(net)
    net.mine_after(ARGUMENTS_WAIT_S)
    net.tx(net.task.functions.reportNoArguments(task_id, 0), nodes[0])
    receipt = net.tx(net.task.functions.reportNoArguments(task_id, 1), nodes[1])
    (moved,) = net.event_args(receipt, "TaskDeadlineMoved")
    assert moved["deadline"] == block_time(net, receipt) + WINDOW_S < block_time(net, receipt) + TIMEOUT_S
    net.mine_after(WINDOW_S + 1)
    receipt = net.cancel(task_id, nodes[0])
    assert net.event_args(receipt, "TaskAborted") == [{"taskId": task_id, "reason": AbortReason.NO_ARGUMENTS}]
    assert [e["node"] for e in net.event_args(receipt, "TaskNodeCompensated")] == nodes[:2]
    assert net.ledger.received(creator) == -2 * (ETHER // 10)
    set_window = net.task.functions.setResponseWindow
    assert net.reverts(set_window(60), creator).name == "NotOwner"
    assert net.reverts(set_window(0), net.owner).name == "InvalidResponseWindow"
    assert net.reverts(set_window(2**32), net.owner).name == "InvalidResponseWindow"
    net.tx(set_window(60), net.owner)
    assert net.task.functions.responseWindow().call() == 60
