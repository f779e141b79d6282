"""A node's commitment and result live in one slot of its own, reused by each task it runs (Task._seals):
a disclosure that comes after its task's decision must still be judged against that task's result,
though the winner and its partner have moved on to a new task and overwritten their seals there."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from cluster.chain.contracts import TaskType
from tests.contracts.net import ETHER, Net

GPT_A, GPT_B = keccak(b"task A's answer"), keccak(b"task B's answer")
SD_A = bytes.fromhex("0123456789abcdef" * 2)
SD_B = bytes(b ^ 0xFF for b in SD_A)  # every bit differs: never similar to SD_A


def _decide_then_move_on(net: Net, task_type: TaskType, right: bytes, wrong: bytes) -> tuple[int, str]:
    """Task A on 3 of 4 nodes: rounds 0 and 1 agree on `right`, round 2 committed `wrong` and has not
    disclosed. Round 0 uploads; task B then runs on rounds 0 and 1's nodes and the idle one, all of
    them disclosing `wrong`. Returns (task A, round 2's node)."""
    net.join_all(net.accounts[3:7])
    creator = net.accounts[1]
    task_a, _ = net.create_task(creator, task_type, ETHER)
    nodes_a = net.selected(task_a)
    for r, result in enumerate((right, right, wrong)):
        net.commit(task_a, r, result)
    net.disclose(task_a, 0)
    (success,) = net.event_args(net.disclose(task_a, 1), "TaskSuccess")
    assert bytes(success["result"]) == right and success["resultNode"] == nodes_a[0]
    net.upload(task_a, 0, nodes_a[0])

    task_b, _ = net.create_task(creator, task_type, ETHER)
    nodes_b = net.selected(task_b)
    assert set(nodes_b) == set(net.accounts[3:7]) - {nodes_a[2]}  # the winner and its partner again
    for r in range(3):
        net.commit(task_b, r, wrong)
    for r in range(3):
        net.disclose(task_b, r)
    return task_a, nodes_a[2]


@pytest.mark.parametrize(
    ("task_type", "right", "wrong"),
    [(TaskType.GPT, GPT_A, GPT_B), (TaskType.SD, SD_A, SD_B)],
    ids=["gpt", "sd"],
)
def test_a_late_disclosure_matching_only_the_moved_on_seals_is_slashed(net: Net, task_type, right, wrong):
    task_a, third = _decide_then_move_on(net, task_type, right, wrong)
    receipt = net.disclose(task_a, 2)
    assert net.event_args(receipt, "TaskNodeSlashed") == [{"taskId": task_a, "node": third}]
    assert net.event_args(receipt, "TaskNodeSuccess") == []


@pytest.mark.parametrize(
    ("task_type", "right"), [(TaskType.GPT, GPT_A), (TaskType.SD, SD_A)], ids=["gpt", "sd"]
)
def test_a_late_disclosure_of_the_decided_result_is_paid(net: Net, task_type, right):
    net.join_all(net.accounts[3:7])
    creator = net.accounts[1]
    task_a, _ = net.create_task(creator, task_type, ETHER)
    nodes_a = net.selected(task_a)
    for r in range(3):
        net.commit(task_a, r, right)
    net.disclose(task_a, 0)
    net.disclose(task_a, 1)
    net.upload(task_a, 0, nodes_a[0])
    task_b, _ = net.create_task(creator, task_type, ETHER)
    for r in range(3):
        net.commit(task_b, r, SD_B if task_type == TaskType.SD else GPT_B)
    for r in range(3):
        net.disclose(task_b, r)
    receipt = net.disclose(task_a, 2)
    assert net.event_args(receipt, "TaskNodeSuccess") == [
        {"taskId": task_a, "node": nodes_a[2], "fee": 24 * ETHER // 100}
    ]
    assert net.event_args(receipt, "TaskNodeSlashed") == []


def test_round_seal_is_the_commitment_then_the_result_hash_then_gone(net: Net):
    net.join_all(net.accounts[3:6])
    task_id, _ = net.create_task(net.accounts[1], TaskType.GPT, ETHER)
    seal = net.task.functions.roundSeal
    assert seal(task_id, 0).call() == b"\0" * 32  # not committed
    receipt = net.commit(task_id, 0, GPT_A)
    (committed,) = net.event_args(receipt, "TaskResultCommitmentSubmitted")
    assert seal(task_id, 0).call() == committed["commitment"]
    net.report_error(task_id, 1)
    assert seal(task_id, 1).call() == b"\0" * 32  # an error report has no seal
    net.commit(task_id, 2, GPT_A)
    net.disclose(task_id, 0)
    assert seal(task_id, 0).call() == keccak(GPT_A)
    net.disclose(task_id, 2)  # decides with round 0: round 2 is settled and its node released
    assert seal(task_id, 2).call() == b"\0" * 32
    assert seal(task_id, 0).call() == keccak(GPT_A)  # the result node waits for its upload
    assert net.reverts(seal(task_id, 3), net.owner).name == "InvalidRound"
