"""The audit's findings, one test each: every one failed on the contracts before the fix.

- queue squatting: a task no card model could ever run is refused at creation;
- node locking: a minimum fee, and nodes report arguments that never came (compensated from the fee);
- withholding: a node that committed and did not disclose once it could is slashed at the cancel;
- an error report counts as an empty disclosed result and matches an empty GPT result;
(the cost growing with the network: tests/contracts/test_scaling.py and benchmarks/chain_gas.py).
"""

from __future__ import annotations

from cluster.chain.contracts import AbortReason, NodeStatus, TaskType
from tests.contracts.net import ETHER, GPU_A, GPU_C, Net

SD, GPT = TaskType.SD, TaskType.GPT
TIMEOUT_S = 15 * 60
ARGUMENTS_WAIT_S = 2 * 60
RESPONSE_WINDOW_S = 2 * 60
MIN_FEE = 10**15


def test_a_task_no_card_model_could_ever_run_is_refused_and_evicts_nothing(net: Net):
    creator, squatter = net.accounts[1], net.accounts[2]
    net.join_all(net.accounts[3:6], GPU_A)  # 24 GB
    net.tx(net.queue.functions.setSizeLimit(1), net.owner)
    net.tx(net.node.functions.pause(), net.accounts[5])
    real, _ = net.create_task(creator, GPT, ETHER)  # queued: the third node is paused, not gone
    create = net.task.functions.createTask
    for task_type, vram in ((GPT, 25), (SD, 25), (GPT, 10_000)):
        err = net.reverts(create(task_type, b"\1" * 32, b"\0" * 32, vram, 1), squatter, 100 * ETHER)
        assert err.name == "TaskCannotRun" and err.error_args == {"taskType": task_type, "vramLimit": vram}
    assert list(net.view(net.queue, "queuedTaskIds")) == [real]  # nothing evicted
    net.cancel(real, creator)
    # Two 80 GB nodes are not three: an SD task over 24 GB is still refused; the third makes it possible.
    net.join_all(net.accounts[6:8], GPU_C)
    assert net.reverts(create(SD, b"\1" * 32, b"\0" * 32, 48, 1), squatter, ETHER).name == "TaskCannotRun"
    net.join(net.accounts[8], GPU_C)
    _, receipt = net.create_task(squatter, SD, ETHER, vram_limit=48)
    assert net.event_args(receipt, "TaskStarted") != []


def test_the_minimum_fee_is_owner_settable_and_applies_to_new_tasks(net: Net):
    net.join_all(net.accounts[3:6])
    create = net.task.functions.createTask(GPT, b"\1" * 32, b"\0" * 32, 0, 1)
    err = net.reverts(create, net.accounts[1], 1)
    assert err.name == "FeeBelowMinimum" and err.error_args == {"fee": 1, "minTaskFee": MIN_FEE}
    assert net.reverts(net.task.functions.setMinTaskFee(1), net.accounts[1]).name == "NotOwner"
    net.tx(net.task.functions.setMinTaskFee(2 * MIN_FEE), net.owner)
    assert net.reverts(create, net.accounts[1], MIN_FEE).name == "FeeBelowMinimum"
    net.create_task(net.accounts[1], GPT, 2 * MIN_FEE)


def test_nodes_report_arguments_that_never_came_and_are_paid_for_the_wait(net: Net):
    creator = net.accounts[1]
    net.join_all(net.accounts[3:6])
    task_id, _ = net.create_task(creator, GPT, ETHER)
    nodes = net.selected(task_id)
    report = net.task.functions.reportNoArguments
    err = net.reverts(report(task_id, 0), nodes[0])
    assert err.name == "ArgumentsWaitNotPassed"
    net.mine_after(ARGUMENTS_WAIT_S)
    assert net.reverts(report(task_id, 0), nodes[1]).name == "NotSelectedNode"
    receipt = net.tx(report(task_id, 0), nodes[0])
    assert net.event_args(receipt, "TaskNoArgumentsReported") == [
        {"taskId": task_id, "round": 0, "node": nodes[0]}
    ]
    assert (
        net.event_args(receipt, "TaskAborted") == []
    )  # one report is not enough: it may be the node's fault
    assert net.reverts(report(task_id, 0), nodes[0]).name == "AlreadyReportedNoArguments"
    commit = net.task.functions.submitTaskResultCommitment(task_id, 0, b"\1" * 32)
    assert net.reverts(commit, nodes[0]).name == "ReportedNoArguments"

    receipt = net.tx(report(task_id, 2), nodes[2])
    # The second report leaves responseWindow for the relay's receipt to refute the reports, then a cancel
    # ends the task (tests/contracts/test_second_audit.py refutes them).
    assert net.event_args(receipt, "TaskAborted") == []
    reported_at = net.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert net.event_args(receipt, "TaskDeadlineMoved") == [
        {"taskId": task_id, "deadline": reported_at + RESPONSE_WINDOW_S}
    ]
    assert net.reverts(net.task.functions.cancelTask(task_id), nodes[0]).name == "DeadlineNotPassed"
    net.mine_after(RESPONSE_WINDOW_S + 1)
    receipt = net.cancel(task_id, nodes[0])
    assert net.event_args(receipt, "TaskAborted") == [{"taskId": task_id, "reason": AbortReason.NO_ARGUMENTS}]
    compensation = ETHER // 10  # argumentsCompensationBps = 1,000 per reporting node
    assert net.event_args(receipt, "TaskNodeCompensated") == [
        {"taskId": task_id, "node": nodes[0], "amount": compensation},
        {"taskId": task_id, "node": nodes[2], "amount": compensation},
    ]
    assert net.event_args(receipt, "TaskFeeRefunded") == [
        {"taskId": task_id, "creator": creator, "amount": ETHER - 2 * compensation}
    ]
    assert net.ledger.received(creator) == -2 * compensation
    assert {e["node"] for e in net.event_args(receipt, "TaskNodeCancelled")} == set(nodes)
    # Nobody is blamed: each round scores as if it had finished in its round position.
    assert [net.view(net.qos, "score", n) for n in nodes] == [20, 18, 12]
    assert all(net.status(n) == NodeStatus.AVAILABLE for n in nodes)
    settings = net.task.functions.setArgumentsWait
    assert net.reverts(settings(TIMEOUT_S, 1_000), net.owner).name == "InvalidArgumentsWait"
    assert net.reverts(settings(60, 3_001), net.owner).name == "InvalidArgumentsWait"


def cancelled_after_disclosures(
    net: Net, results: tuple[bytes, ...], disclosing: int
) -> tuple[int, list[str]]:
    """A GPT task whose three rounds committed ``results`` and whose first ``disclosing`` rounds
    disclosed; its deadline passed. Returns the task and its nodes by round."""
    net.join_all(net.accounts[3:6])
    task_id, _ = net.create_task(net.accounts[1], GPT, ETHER)
    for r, result in enumerate(results):
        net.commit(task_id, r, result)
    for r in range(disclosing):
        net.disclose(task_id, r)
    net.mine_after(TIMEOUT_S + 1)
    return task_id, net.selected(task_id)


def test_a_node_that_withholds_its_disclosure_is_slashed_at_the_cancel(net: Net):
    # Rounds 0 and 1 agree (TaskSuccess): round 2 sees it would be slashed, and stays silent.
    task_id, nodes = cancelled_after_disclosures(net, (b"right", b"right", b"wrong"), disclosing=2)
    stake = net.node_stake()
    receipt = net.tx(net.task.functions.cancelTask(task_id), nodes[2])
    assert net.event_args(receipt, "TaskNodeSlashed") == [{"taskId": task_id, "node": nodes[2]}]
    assert net.event_args(receipt, "NodeSlashed")[0]["amount"] == stake
    assert net.status(nodes[2]) == NodeStatus.QUIT
    # Round 0 (the result node, no upload) is cancelled unpaid; round 1 was paid at the decision.
    assert net.event_args(receipt, "TaskNodeCancelled") == [{"taskId": task_id, "node": nodes[0]}]


def test_two_withholders_cannot_abort_an_honest_task_and_outscore_its_node(net: Net):
    creator = net.accounts[1]
    # the two lazy nodes commit garbage and never disclose
    task_id, nodes = cancelled_after_disclosures(net, (b"honest", b"garbage 1", b"garbage 2"), disclosing=1)
    receipt = net.tx(net.task.functions.cancelTask(task_id), nodes[1])
    assert {e["node"] for e in net.event_args(receipt, "TaskNodeSlashed")} == {nodes[1], nodes[2]}
    assert net.event_args(receipt, "TaskNodeCancelled") == [{"taskId": task_id, "node": nodes[0]}]
    assert net.ledger.received(creator) == 0  # the whole fee back: nobody was paid
    assert net.view(net.qos, "score", nodes[0]) == 20  # first to commit and to disclose
    assert [net.status(n) for n in nodes] == [NodeStatus.AVAILABLE, NodeStatus.QUIT, NodeStatus.QUIT]


def test_an_error_report_matches_an_empty_gpt_result(net: Net):
    creator = net.accounts[1]
    net.join_all(net.accounts[3:6])
    task_id, _ = net.create_task(creator, GPT, ETHER)
    nodes = net.selected(task_id)
    receipts = net.run(task_id, [None, b"", b""])  # round 0 reports an error, 1 and 2 disclose nothing
    events = [e for r in receipts for e in net.events(r)]
    assert [e.args for e in events if e.name == "TaskAborted"] == [
        {"taskId": task_id, "reason": AbortReason.ERROR_REPORTED}
    ]
    assert not [e for e in events if e.name in ("TaskSuccess", "TaskNodeSlashed")]
    assert {e.args["node"] for e in events if e.name == "TaskNodeSuccess"} == set(nodes)
    assert all(net.status(n) == NodeStatus.AVAILABLE for n in nodes)
