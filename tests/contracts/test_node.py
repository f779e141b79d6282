"""Node: staking, every transition of the status table, card model keys, one task per node."""

from __future__ import annotations

import pytest

from cluster.chain.contracts import NodeStatus, TaskType
from cluster.protocol.hashes import card_model_key
from tests.contracts.net import ETHER, GPU_A, GPU_B, Net

S = NodeStatus


def nodes(net: Net, n: int) -> list[str]:
    return net.accounts[3 : 3 + n]


def status_changes(net: Net, receipt) -> list[tuple[str, S, S]]:
    return [(a["node"], S(a["from"]), S(a["to"])) for a in net.event_args(receipt, "NodeStatusChanged")]


def busy_trio(net: Net) -> tuple[int, list[str]]:
    """Three GPT nodes of one card model, all Busy with one task."""
    net.join_all(nodes(net, 3))
    task_id, _ = net.create_task(net.accounts[1])
    return task_id, net.selected(task_id)


def finish_with_errors(net: Net, task_id: int):
    """Ends a task quickly: three error reports (aborted, every reporter paid and released)."""
    return [net.report_error(task_id, r) for r in range(3)]


def test_join_stakes_and_quit_refunds(net: Net):
    node = nodes(net, 1)[0]
    stake = net.node_stake()
    assert stake == 400 * ETHER
    receipt = net.join(node)
    (joined,) = net.event_args(receipt, "NodeJoined")
    assert joined["stake"] == stake and joined["gpuVramGB"] == 24
    assert bytes(joined["cardModelKey"]) == card_model_key(*GPU_A) == net.card_key(node)
    assert status_changes(net, receipt) == [(node, S.QUIT, S.AVAILABLE)]
    assert net.ledger.received(net.node.address) == stake

    receipt = net.tx(net.node.functions.quit(), node)
    assert status_changes(net, receipt) == [(node, S.AVAILABLE, S.QUIT)]
    assert net.event_args(receipt, "NodeStakeRefunded") == [{"node": node, "amount": stake}]
    assert net.ledger.received(node) == 0  # the whole stake came back (gas aside)
    assert net.node.functions.totalStaked().call() == 0


@pytest.mark.parametrize("stake", [0, 400 * ETHER - 1, 400 * ETHER + 1])
def test_join_with_wrong_stake_is_refused(net: Net, stake: int):
    err = net.reverts(net.node.functions.join(*GPU_A), nodes(net, 1)[0], stake)
    assert err.name == "IncorrectStake"
    assert err.error_args == {"sent": stake, "required": 400 * ETHER}


def test_join_twice_and_bad_card_are_refused(net: Net):
    node, other = nodes(net, 2)
    net.join(node)
    err = net.reverts(net.node.functions.join(*GPU_B), node, net.node_stake())
    assert err.name == "NodeAlreadyJoined" and err.error_args["status"] == S.AVAILABLE
    assert net.reverts(net.node.functions.join("x", 0, "r"), other, net.node_stake()).name == "InvalidVram"
    err = net.reverts(net.node.functions.join("", 24, "r"), other, net.node_stake())
    assert err.name == "InvalidNodeName" and err.error_args == {"gpuNameBytes": 0, "runtimeBytes": 1}


def test_owner_changes_the_stake_and_each_node_gets_back_what_it_paid(net: Net):
    early, late = nodes(net, 2)
    net.join(early)
    assert net.reverts(net.node.functions.setNodeStake(5 * ETHER), early).name == "NotOwner"
    net.tx(net.node.functions.setNodeStake(5 * ETHER), net.owner)
    net.join(late, GPU_A, 5 * ETHER)
    for account, paid in ((early, 400 * ETHER), (late, 5 * ETHER)):
        receipt = net.tx(net.node.functions.quit(), account)
        assert net.event_args(receipt, "NodeStakeRefunded")[0]["amount"] == paid


def test_pause_resume_and_quit_from_paused(net: Net):
    node = nodes(net, 1)[0]
    net.join(node)
    receipt = net.tx(net.node.functions.pause(), node)
    assert status_changes(net, receipt) == [(node, S.AVAILABLE, S.PAUSED)]
    assert net.event_args(receipt, "NodePaused") == [{"node": node}]
    assert net.node.functions.numAvailableNodes().call() == 0
    receipt = net.tx(net.node.functions.resume(), node)
    assert status_changes(net, receipt) == [(node, S.PAUSED, S.AVAILABLE)]
    net.tx(net.node.functions.pause(), node)
    receipt = net.tx(net.node.functions.quit(), node)
    assert status_changes(net, receipt) == [(node, S.PAUSED, S.QUIT)]
    assert net.event_args(receipt, "NodeStakeRefunded")[0]["amount"] == 400 * ETHER


def test_invalid_transitions_are_refused(net: Net):
    node = nodes(net, 1)[0]
    for fn in (net.node.functions.pause(), net.node.functions.resume(), net.node.functions.quit()):
        err = net.reverts(fn, node)  # never joined: Quit
        assert err.name == "InvalidNodeStatus" and err.error_args["status"] == S.QUIT
    net.join(node)
    assert net.reverts(net.node.functions.resume(), node).error_args["status"] == S.AVAILABLE
    net.tx(net.node.functions.pause(), node)
    assert net.reverts(net.node.functions.pause(), node).error_args["status"] == S.PAUSED


def test_busy_node_pauses_when_its_task_ends(net: Net):
    task_id, selected = busy_trio(net)
    node = selected[0]
    assert net.status(node) == S.BUSY
    receipt = net.tx(net.node.functions.pause(), node)
    assert status_changes(net, receipt) == [(node, S.BUSY, S.PENDING_PAUSE)]
    assert net.reverts(net.node.functions.resume(), node).error_args["status"] == S.PENDING_PAUSE
    assert net.reverts(net.node.functions.pause(), node).error_args["status"] == S.PENDING_PAUSE
    receipts = finish_with_errors(net, task_id)
    assert (node, S.PENDING_PAUSE, S.PAUSED) in [c for r in receipts for c in status_changes(net, r)]
    assert [net.status(n) for n in selected] == [S.PAUSED, S.AVAILABLE, S.AVAILABLE]


def test_busy_node_quits_when_its_task_ends_and_gets_its_stake(net: Net):
    task_id, selected = busy_trio(net)
    node = selected[1]
    receipt = net.tx(net.node.functions.quit(), node)
    assert status_changes(net, receipt) == [(node, S.BUSY, S.PENDING_QUIT)]
    assert net.event_args(receipt, "NodeStakeRefunded") == []
    for fn in (net.node.functions.pause(), net.node.functions.quit(), net.node.functions.resume()):
        assert net.reverts(fn, node).error_args["status"] == S.PENDING_QUIT
    receipts = finish_with_errors(net, task_id)
    (refund,) = [e for r in receipts for e in net.event_args(r, "NodeStakeRefunded")]
    assert refund == {"node": node, "amount": 400 * ETHER}
    assert net.status(node) == S.QUIT


def test_pending_pause_node_may_still_quit(net: Net):
    task_id, selected = busy_trio(net)
    node = selected[2]
    net.tx(net.node.functions.pause(), node)
    receipt = net.tx(net.node.functions.quit(), node)
    assert status_changes(net, receipt) == [(node, S.PENDING_PAUSE, S.PENDING_QUIT)]
    finish_with_errors(net, task_id)
    assert net.status(node) == S.QUIT


def test_a_node_holds_one_task_at_a_time(net: Net):
    task_id, selected = busy_trio(net)
    second, _ = net.create_task(net.accounts[1])
    assert net.task_status(second) == 1  # queued: the only three nodes are busy
    receipts = finish_with_errors(net, task_id)
    started = net.event_args(receipts[-1], "TaskStarted")
    assert sorted(e["selectedNode"] for e in started) == sorted(selected)
    assert all(net.node_info(n)["taskId"] == second for n in selected)


def test_node_counters_and_paged_info(net: Net):
    a, b, c, d = nodes(net, 4)
    net.join_all([a, b, c])
    net.join(d, GPU_B)
    net.tx(net.node.functions.pause(), d)
    assert net.stats.functions.nodeCounters().call() == [4, 3, 0, 1]
    net.create_task(net.accounts[1], TaskType.SD)
    assert net.stats.functions.nodeCounters().call() == [4, 0, 3, 1]
    net.tx(net.node.functions.quit(), d)
    assert net.stats.functions.nodeCounters().call() == [3, 0, 3, 0]
    page = net.stats.functions.getNodes(2, 10).call()
    assert page == [(c, GPU_A[0], 24, GPU_A[2], S.BUSY), (d, GPU_B[0], 24, GPU_B[2], S.QUIT)]
    assert net.stats.functions.getNodes(4, 10).call() == []
    assert len(net.stats.functions.getNodes(0, 2).call()) == 2
