"""Task lifecycle: commit, disclose, every decision row of PROTOCOL.md step 6, fees and position awards."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from cluster.chain.contracts import AbortReason, Decision, NodeStatus, TaskStatus, TaskType
from cluster.protocol.hashes import commitment
from tests.contracts.net import ETHER, Net

R1, R2, R3 = (keccak(f"result {i}".encode()) for i in (1, 2, 3))
STAKE = 400 * ETHER


def start_task(net: Net, task_type: TaskType = TaskType.GPT, fee: int = ETHER) -> tuple[int, list[str], str]:
    """Three nodes of one card model and a task they all run; returns (task id, nodes by round, creator)."""
    net.join_all(net.accounts[3:6])
    creator = net.accounts[1]
    task_id, _ = net.create_task(creator, task_type, fee)
    return task_id, net.selected(task_id), creator


def all_events(net: Net, receipts, name: str) -> list[dict]:
    return [args for r in receipts for args in net.event_args(r, name)]


def qos_history(net: Net, node: str) -> tuple[int, int]:
    total, num_tasks, _, _ = net.qos.functions.histories(node).call()
    return total, num_tasks


def test_task_started_events_name_each_round(net: Net):
    net.join_all(net.accounts[3:6])
    task_hash = keccak(b'{"model": "m"}')
    _, receipt = net.create_task(net.accounts[1], TaskType.GPT, ETHER, task_hash=task_hash)
    started = net.event_args(receipt, "TaskStarted")
    assert [e["round"] for e in started] == [0, 1, 2]
    assert len({e["selectedNode"] for e in started}) == 3
    assert all(bytes(e["taskHash"]) == task_hash and e["creator"] == net.accounts[1] for e in started)
    assert all(e["taskType"] == TaskType.GPT for e in started)


def test_three_agree_pay_40_36_24_and_the_task_is_deleted(net: Net):
    task_id, (n0, n1, n2), creator = start_task(net)
    receipts = net.run(task_id, [R1, R1, R1])
    assert net.event_args(receipts[2], "TaskResultCommitmentsReady") == [{"taskId": task_id}]
    success = net.event_args(receipts[4], "TaskSuccess")  # the second disclosure decides
    assert success == [{"taskId": task_id, "result": R1, "resultNode": n0}]
    assert all_events(net, receipts, "TaskNodeSuccess") == [
        {"taskId": task_id, "node": n1, "fee": 36 * ETHER // 100},
        {"taskId": task_id, "node": n2, "fee": 24 * ETHER // 100},
    ]
    assert net.task_status(task_id) == TaskStatus.COMMITMENTS_READY  # waiting for the upload
    receipt = net.upload(task_id, 0, n0)
    assert net.event_args(receipt, "TaskResultUploaded") == [{"taskId": task_id}]
    assert net.event_args(receipt, "TaskNodeSuccess") == [
        {"taskId": task_id, "node": n0, "fee": 40 * ETHER // 100}
    ]
    assert net.task_status(task_id) == TaskStatus.NONE
    assert [net.ledger.received(n) + STAKE for n in (n0, n1, n2)] == [ETHER * p // 100 for p in (40, 36, 24)]
    assert net.ledger.received(creator) == -ETHER
    assert [net.status(n) for n in (n0, n1, n2)] == [NodeStatus.AVAILABLE] * 3
    assert [net.qos.functions.score(n).call() for n in (n0, n1, n2)] == [20, 18, 12]
    assert net.task_counters() == {"total": 1, "queued": 0, "running": 0, "succeeded": 1, "aborted": 0}


def test_two_agree_and_the_third_that_differs_is_slashed(net: Net):
    task_id, (n0, _n1, n2), creator = start_task(net)
    receipts = net.run(task_id, [R1, R1, R2])
    last = receipts[-1]
    assert net.event_args(last, "TaskNodeSlashed") == [{"taskId": task_id, "node": n2}]
    assert net.event_args(last, "NodeSlashed") == [{"node": n2, "treasury": net.owner, "amount": STAKE}]
    assert net.event_args(last, "TaskFeeRefunded") == [
        {"taskId": task_id, "creator": creator, "amount": 24 * ETHER // 100}
    ]
    assert net.status(n2) == NodeStatus.QUIT
    assert qos_history(net, n2) == (0, 0)  # slashing resets the history
    assert net.ledger.received(net.owner) == STAKE  # the treasury
    assert net.ledger.received(n2) == -STAKE
    net.upload(task_id, 0, n0)
    assert net.ledger.received(creator) == -ETHER * 76 // 100
    assert net.task_status(task_id) == TaskStatus.NONE


@pytest.mark.parametrize(
    ("results", "result_round", "slashed_round"),
    [([R1, R2, R1], 0, 1), ([R1, R2, R2], 1, 0)],
    ids=["third-matches-first", "third-matches-second"],
)
def test_first_two_differ_and_the_third_decides(net: Net, results, result_round, slashed_round):
    task_id, selected, creator = start_task(net)
    receipts = net.run(task_id, results)
    assert all_events(net, receipts[:5], "TaskSuccess") == []  # no pair among the first two disclosures
    (success,) = net.event_args(receipts[5], "TaskSuccess")
    assert success["resultNode"] == selected[result_round] and success["result"] == results[result_round]
    assert net.event_args(receipts[5], "TaskNodeSlashed") == [
        {"taskId": task_id, "node": selected[slashed_round]}
    ]
    assert net.status(selected[slashed_round]) == NodeStatus.QUIT
    receipt = net.upload(task_id, result_round, selected[result_round])
    assert net.event_args(receipt, "TaskResultUploaded") == [{"taskId": task_id}]
    slashed_share = ETHER * (36 if slashed_round == 1 else 40) // 100
    assert net.ledger.received(creator) == -ETHER + slashed_share


def test_all_three_differ_abort_refund_and_nobody_is_slashed(net: Net):
    task_id, selected, creator = start_task(net)
    receipts = net.run(task_id, [R1, R2, R3])
    last = receipts[-1]
    assert net.event_args(last, "TaskAborted") == [{"taskId": task_id, "reason": AbortReason.RESULT_ILLEGAL}]
    assert [e["node"] for e in net.event_args(last, "TaskNodeCancelled")] == selected
    assert net.event_args(last, "TaskFeeRefunded") == [
        {"taskId": task_id, "creator": creator, "amount": ETHER}
    ]
    assert all_events(net, receipts, "TaskNodeSlashed") == []
    assert [net.status(n) for n in selected] == [NodeStatus.AVAILABLE] * 3
    assert net.ledger.received(creator) == 0
    assert [qos_history(net, n) for n in selected] == [(20, 1), (18, 1), (12, 1)]
    assert net.task_counters()["aborted"] == 1


def test_two_error_reports_pay_the_reporters_and_slash_a_real_result(net: Net):
    task_id, (n0, n1, n2), creator = start_task(net)
    net.report_error(task_id, 0)
    receipt = net.report_error(task_id, 1)
    assert net.event_args(receipt, "TaskAborted") == [
        {"taskId": task_id, "reason": AbortReason.ERROR_REPORTED}
    ]
    assert net.event_args(receipt, "TaskNodeSuccess") == [
        {"taskId": task_id, "node": n0, "fee": 40 * ETHER // 100},
        {"taskId": task_id, "node": n1, "fee": 36 * ETHER // 100},
    ]
    assert net.get_task(task_id)["decision"] == Decision.ERROR_REPORTED
    receipt = net.commit(task_id, 2, R1)
    assert net.event_args(receipt, "TaskResultCommitmentsReady") == [{"taskId": task_id}]
    receipt = net.disclose(task_id, 2)
    assert net.event_args(receipt, "TaskNodeSlashed") == [{"taskId": task_id, "node": n2}]
    assert net.event_args(receipt, "TaskAborted") == []  # the task ended once, at the decision
    assert net.ledger.received(creator) == -ETHER * 76 // 100
    assert net.task_status(task_id) == TaskStatus.NONE
    assert net.task_counters()["aborted"] == 1


def test_three_error_reports_pay_everyone(net: Net):
    task_id, selected, creator = start_task(net)
    receipts = [net.report_error(task_id, r) for r in range(3)]
    assert [e["fee"] for e in all_events(net, receipts, "TaskNodeSuccess")] == [
        ETHER * p // 100 for p in (40, 36, 24)
    ]
    assert net.ledger.received(creator) == -ETHER
    assert [net.status(n) for n in selected] == [NodeStatus.AVAILABLE] * 3


def test_an_error_report_against_two_matching_results_is_slashed(net: Net):
    task_id, (n0, n1, _n2), _creator = start_task(net)
    receipts = net.run(task_id, [None, R1, R1])
    assert all_events(net, receipts, "TaskSuccess") == [{"taskId": task_id, "result": R1, "resultNode": n1}]
    assert all_events(net, receipts, "TaskNodeSlashed") == [{"taskId": task_id, "node": n0}]


def image_hashes(*values: int) -> bytes:
    return b"".join(v.to_bytes(8, "big") for v in values)


@pytest.mark.parametrize(("distance", "is_match"), [(0, True), (4, True), (5, False), (64, False)])
def test_sd_results_match_within_the_distance_threshold(net: Net, distance: int, is_match: bool):
    task_id, (n0, n1, _n2), _ = start_task(net, TaskType.SD)
    a = image_hashes(0x0123456789ABCDEF, 0xFEDCBA9876543210)
    b = image_hashes(0x0123456789ABCDEF, 0xFEDCBA9876543210 ^ ((1 << distance) - 1))  # flip `distance` bits
    receipts = net.run(task_id, [a, b, a])
    decided_at = 4 if is_match else 5  # the second disclosure, or only the third
    (success,) = all_events(net, receipts, "TaskSuccess")
    assert success["resultNode"] == n0 and net.event_args(receipts[decided_at], "TaskSuccess") == [success]
    slashed = [e["node"] for e in all_events(net, receipts, "TaskNodeSlashed")]
    assert slashed == ([] if is_match else [n1])


def test_sd_results_of_different_lengths_or_partial_hashes_never_match(net: Net):
    task_id, _selected, _ = start_task(net, TaskType.SD)
    a = image_hashes(7, 7)
    receipts = net.run(task_id, [a, a[:8], a[:12]])  # two images, one image, a 12-byte result
    assert all_events(net, receipts, "TaskAborted") == [
        {"taskId": task_id, "reason": AbortReason.RESULT_ILLEGAL}
    ]


def test_commit_and_disclose_guards(net: Net):
    task_id, (n0, n1, n2), _creator = start_task(net)
    fns = net.task.functions
    assert net.reverts(fns.submitTaskResultCommitment(task_id, 0, b"\1" * 32), n1).name == "NotSelectedNode"
    assert net.reverts(fns.submitTaskResultCommitment(task_id, 3, b"\1" * 32), n0).name == "InvalidRound"
    assert net.reverts(fns.submitTaskResultCommitment(task_id, 0, b"\0" * 32), n0).name == "EmptyCommitment"
    assert net.reverts(fns.submitTaskResultCommitment(99, 0, b"\1" * 32), n0).name == "TaskNotRunning"
    net.commit(task_id, 0, R1)
    assert net.reverts(fns.submitTaskResultCommitment(task_id, 0, b"\1" * 32), n0).name == "AlreadyCommitted"
    assert net.reverts(fns.reportTaskError(task_id, 0), n0).name == "AlreadyCommitted"
    err = net.reverts(fns.discloseTaskResult(task_id, 0, R1, b"\0" * 32), n0)
    assert err.name == "CommitmentsNotReady" and err.error_args == {"taskId": task_id, "numCommits": 1}
    # n1 copies n0's commitment: it binds n0's address, so n1 can never disclose it.
    copied = net.task.functions.roundSeal(task_id, 0).call()
    net.tx(fns.submitTaskResultCommitment(task_id, 1, copied), n1)
    net.commit(task_id, 2, R1)
    _, nonce0 = net._secrets[(task_id, 0)]
    assert bytes(copied) == commitment(R1, nonce0, n0)
    assert net.reverts(fns.discloseTaskResult(task_id, 1, R1, nonce0), n1).name == "CommitmentMismatch"
    assert net.reverts(fns.discloseTaskResult(task_id, 0, R1, b"\0" * 32), n0).name == "CommitmentMismatch"
    assert net.reverts(fns.discloseTaskResult(task_id, 0, R2, nonce0), n0).name == "CommitmentMismatch"
    assert net.reverts(fns.reportResultsUploaded(task_id, 0), n0).name == "TaskNotSucceeded"
    net.disclose(task_id, 0)
    assert net.reverts(fns.discloseTaskResult(task_id, 0, R1, nonce0), n0).name == "AlreadyDisclosed"
    net.disclose(task_id, 2)  # R1 twice: success, n0 is the result node
    err = net.reverts(fns.reportResultsUploaded(task_id, 2), n2)
    assert err.name == "NotResultNode" and err.error_args["resultRound"] == 0
    assert net.reverts(fns.reportResultsUploaded(task_id, 0), n1).name == "NotSelectedNode"
    net.upload(task_id, 0, n0)
    assert net.reverts(fns.reportResultsUploaded(task_id, 0), n0).name == "ResultAlreadyUploaded"
    assert net.get_task(task_id)["decision"] == Decision.SUCCESS  # n1 has not disclosed yet


def test_position_awards_follow_commit_and_disclosure_order(net: Net):
    fee = ETHER + 7  # not a multiple of 50: the last node settled takes the rounding remainder
    task_id, (n0, n1, n2), _creator = start_task(net, fee=fee)
    for r in (2, 0, 1):
        net.commit(task_id, r, R1)
    receipts = [net.disclose(task_id, r) for r in (1, 2, 0)]
    # Scores: n2 = 10 + 9, n0 = 9 + 6, n1 = 6 + 10 (the result node, paid last on upload).
    assert all_events(net, receipts, "TaskSuccess")[0]["resultNode"] == n1
    receipts.append(net.upload(task_id, 1, n1))
    paid = {e["node"]: e["fee"] for e in all_events(net, receipts, "TaskNodeSuccess")}
    assert paid[n2] == fee * 19 // 50 and paid[n0] == fee * 15 // 50
    assert paid[n1] == fee - paid[n2] - paid[n0]
    assert 0 <= paid[n1] - fee * 16 // 50 < 3
    assert [qos_history(net, n)[0] for n in (n0, n1, n2)] == [15, 16, 19]


def test_fee_must_be_positive_and_type_known(net: Net):
    creator = net.accounts[1]
    fns = net.task.functions
    assert net.reverts(fns.createTask(0, b"\1" * 32, b"\0" * 32, 0, 1), creator, 0).name == "FeeBelowMinimum"
    err = net.reverts(fns.createTask(0, b"\1" * 32, b"\0" * 32, 0, 1), creator, 10**15 - 1)
    assert err.name == "FeeBelowMinimum" and err.error_args == {"fee": 10**15 - 1, "minTaskFee": 10**15}
    err = net.reverts(fns.createTask(2, b"\1" * 32, b"\0" * 32, 0, 1), creator, 1)
    assert err.name == "InvalidTaskType" and err.error_args == {"taskType": 2}
