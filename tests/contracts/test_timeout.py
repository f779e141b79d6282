"""Deadlines and cancellation: who may cancel when, refunds, cancel compensation, kick-out after timeouts."""

from __future__ import annotations

from eth_hash.auto import keccak

from cluster.chain.contracts import AbortReason, NodeStatus, TaskStatus, TaskType
from tests.contracts.net import ETHER, Net

R1 = keccak(b"result")
TIMEOUT_S = 15 * 60
STAKE = 400 * ETHER


def start_task(net: Net, fee: int = ETHER) -> tuple[int, list[str], str]:
    net.join_all(net.accounts[3:6])
    creator = net.accounts[1]
    task_id, _ = net.create_task(creator, TaskType.GPT, fee)
    return task_id, net.selected(task_id), creator


def recorded_scores(net: Net, receipt) -> dict[str, int]:
    return {e["node"]: e["taskScore"] for e in net.event_args(receipt, "TaskScoreRecorded")}


def test_deadline_is_start_plus_timeout_and_guards_the_cancel(net: Net):
    task_id, _selected, creator = start_task(net)
    started_at = net.w3.eth.get_block("latest")["timestamp"]
    deadline = net.get_task(task_id)["deadline"]
    assert deadline == started_at + TIMEOUT_S
    err = net.reverts(net.task.functions.cancelTask(task_id), creator)
    assert err.name == "DeadlineNotPassed" and err.error_args["deadline"] == deadline
    net.mine_after(TIMEOUT_S + 1)
    stranger = net.accounts[2]
    err = net.reverts(net.task.functions.cancelTask(task_id), stranger)
    assert err.name == "NotAllowedToCancel" and err.error_args == {"taskId": task_id, "caller": stranger}
    assert net.reverts(net.task.functions.cancelTask(77), creator).name == "TaskNotFound"


def test_cancel_by_creator_when_nobody_committed_scores_by_round_and_refunds_all(net: Net):
    task_id, selected, creator = start_task(net)
    net.mine_after(TIMEOUT_S + 1)
    receipt = net.cancel(task_id, creator)
    assert net.event_args(receipt, "TaskAborted") == [{"taskId": task_id, "reason": AbortReason.CANCELLED}]
    assert [e["node"] for e in net.event_args(receipt, "TaskNodeCancelled")] == selected
    assert recorded_scores(net, receipt) == dict(zip(selected, (20, 18, 12), strict=True))
    assert net.event_args(receipt, "TaskFeeRefunded") == [
        {"taskId": task_id, "creator": creator, "amount": ETHER}
    ]
    assert net.ledger.received(creator) == 0
    assert [net.status(n) for n in selected] == [NodeStatus.AVAILABLE] * 3
    assert net.task_status(task_id) == TaskStatus.NONE
    assert net.task_counters() == {"total": 1, "queued": 0, "running": 0, "succeeded": 0, "aborted": 1}


def test_cancel_by_a_node_scores_only_the_committed_nodes_in_commit_order(net: Net):
    task_id, (n0, n1, n2), creator = start_task(net)
    net.commit(task_id, 2, R1)
    net.commit(task_id, 0, R1)
    net.mine_after(TIMEOUT_S + 1)
    receipt = net.cancel(task_id, n1)  # the node that never committed may cancel too
    assert recorded_scores(net, receipt) == {n0: 18, n1: 0, n2: 20}
    assert net.event_args(receipt, "TaskNodeSuccess") == []  # cancel compensation is QoS only
    assert net.ledger.received(creator) == 0


def test_cancel_after_success_without_upload_refunds_the_result_nodes_share(net: Net):
    task_id, (n0, _n1, n2), _creator = start_task(net)
    receipts = net.run(task_id, [R1, R1, R1])
    assert net.event_args(receipts[4], "TaskSuccess")[0]["resultNode"] == n0
    net.mine_after(TIMEOUT_S + 1)
    receipt = net.cancel(task_id, n2)
    assert net.event_args(receipt, "TaskAborted") == [{"taskId": task_id, "reason": AbortReason.CANCELLED}]
    assert net.event_args(receipt, "TaskNodeCancelled") == [{"taskId": task_id, "node": n0}]
    assert net.event_args(receipt, "TaskFeeRefunded")[0]["amount"] == 40 * ETHER // 100
    assert net.ledger.received(n0) == -STAKE  # never paid
    assert net.task_counters()["aborted"] == 1 and net.task_counters()["succeeded"] == 0


def test_cancel_after_an_error_decision_ends_the_open_round_without_a_second_abort(net: Net):
    task_id, (_n0, _n1, n2), creator = start_task(net)
    net.report_error(task_id, 0)
    net.report_error(task_id, 1)
    net.mine_after(TIMEOUT_S + 1)
    receipt = net.cancel(task_id, creator)
    assert net.event_args(receipt, "TaskAborted") == []
    assert net.event_args(receipt, "TaskNodeCancelled") == [{"taskId": task_id, "node": n2}]
    assert recorded_scores(net, receipt) == {n2: 0}
    assert net.ledger.received(creator) == -ETHER * 76 // 100
    assert net.task_counters()["aborted"] == 1


def test_queued_task_is_cancelled_by_its_creator_at_any_time(net: Net):
    creator, other = net.accounts[1], net.accounts[2]
    net.join_paused(net.accounts[3:6])
    task_id, receipt = net.create_task(creator, TaskType.SD, 3 * ETHER)
    assert net.task_status(task_id) == TaskStatus.QUEUED
    assert net.reverts(net.task.functions.cancelTask(task_id), other).name == "NotTaskCreator"
    receipt = net.cancel(task_id, creator)
    assert net.event_args(receipt, "TaskAborted") == [{"taskId": task_id, "reason": AbortReason.CANCELLED}]
    assert net.event_args(receipt, "TaskRemoved") == [{"taskId": task_id}]
    # the fee back, less the queue's rent for the seconds it waited (none when both landed in one second)
    rent = sum(e["amount"] for e in net.event_args(receipt, "QueueRentPaid"))
    assert net.ledger.received(creator) == -rent and rent < ETHER // 1000
    assert net.task_counters() == {"total": 1, "queued": 0, "running": 0, "succeeded": 0, "aborted": 1}


def test_nodes_freed_by_a_cancel_start_the_next_queued_task_with_a_fresh_deadline(net: Net):
    first, _selected, creator = start_task(net)
    second, _ = net.create_task(creator, TaskType.GPT, ETHER)
    assert net.task_status(second) == TaskStatus.QUEUED
    net.mine_after(TIMEOUT_S + 1)
    receipt = net.cancel(first, creator)
    assert {e["taskId"] for e in net.event_args(receipt, "TaskStarted")} == {second}
    now = net.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert net.get_task(second)["deadline"] == now + TIMEOUT_S


def test_a_node_that_times_out_twice_is_kicked_out_and_refunded(net: Net):
    net.join_all(net.accounts[3:6])
    lazy = net.accounts[5]
    creator = net.accounts[1]
    receipts = []
    for _ in range(2):
        task_id, _ = net.create_task(creator, TaskType.GPT, ETHER)
        for r, node in enumerate(net.selected(task_id)):
            if node != lazy:
                net.commit(task_id, r, R1)
        net.mine_after(TIMEOUT_S + 1)
        receipts.append(net.cancel(task_id, creator))
    assert net.event_args(receipts[0], "NodeKickedOut") == []
    assert recorded_scores(net, receipts[0])[lazy] == 0  # recent window: 0 + 20 + 20 > 20
    assert net.event_args(receipts[1], "NodeKickedOut") == [{"node": lazy}]
    (trigger,) = net.event_args(receipts[1], "KickOutTriggered")
    assert trigger == {"node": lazy, "recentScoreSum": 20, "kickoutThreshold": 20}
    assert net.event_args(receipts[1], "NodeStakeRefunded") == [{"node": lazy, "amount": STAKE}]
    assert net.status(lazy) == NodeStatus.QUIT
    assert net.ledger.received(lazy) == 0
    assert net.qos.functions.recentScoreSum(lazy).call() == 60  # the kick-out cleared the window
    assert net.qos.functions.score(lazy).call() == 0  # lifetime average kept: weight 1 if it rejoins
    assert net.qos.functions.weight(lazy).call() == 1
