"""Node selection: GPT keeps one card model, SD mixes them, VRAM limits, weights from QoS."""

from __future__ import annotations

from collections import Counter

from cluster.chain.contracts import NodeStatus, TaskStatus, TaskType
from cluster.protocol.hashes import card_model_key
from tests.contracts.net import ETHER, GPU_A, GPU_B, GPU_C, GPU_SMALL, Net

SD, GPT = TaskType.SD, TaskType.GPT


def started(net: Net, receipts) -> dict[int, list[str]]:
    tasks: dict[int, list[str]] = {}
    for receipt in receipts:
        for e in net.event_args(receipt, "TaskStarted"):
            tasks.setdefault(e["taskId"], []).append(e["selectedNode"])
    return tasks


def finish(net: Net, task_id: int) -> list:
    return [net.report_error(task_id, r) for r in range(3)]


def test_gpt_tasks_never_mix_card_models(net: Net):
    cards = {GPU_A: net.accounts[3:13], GPU_B: net.accounts[13:22], GPU_C: net.accounts[22:28]}
    card_of = {n: card_model_key(*card) for card, nodes in cards.items() for n in nodes}
    for card, nodes in cards.items():
        net.join_all(nodes, card)
    creator = net.accounts[1]
    chosen_cards: Counter[bytes] = Counter()
    for _ in range(3):
        receipts = [net.create_task(creator, GPT, ETHER)[1] for _ in range(8)]
        tasks = started(net, receipts)
        # 10 + 9 + 6 nodes hold at most 3 + 3 + 2 tasks at once: every started task is a same-card trio.
        assert 6 <= len(tasks) <= 8
        for task_id, nodes in tasks.items():
            assert len(set(nodes)) == 3
            assert len({card_of[n] for n in nodes}) == 1, f"task {task_id} mixes card models"
            chosen_cards[card_of[nodes[0]]] += 1
            assert net.status(nodes[0]) == NodeStatus.BUSY
        queued = [
            t
            for t in range(1, net.task.functions.nextTaskId().call())
            if net.task_status(t) == TaskStatus.QUEUED
        ]
        pending = dict(tasks)
        while pending:  # ending a task may start a queued one on the freed nodes: end those too
            task_id, _ = pending.popitem()
            for task_id2, nodes in started(net, finish(net, task_id)).items():
                assert len({card_of[n] for n in nodes}) == 1
                chosen_cards[card_of[nodes[0]]] += 1
                pending[task_id2] = nodes
                queued.remove(task_id2)
        assert queued == []
    assert set(chosen_cards) == set(card_of.values())  # every card model got tasks


def test_sd_tasks_mix_card_models_where_gpt_must_wait(net: Net):
    a, b, c = net.accounts[3:6]
    for node, card in ((a, GPU_A), (b, GPU_B), (c, GPU_C)):
        net.join(node, card)
    create = net.task.functions.createTask(GPT, b"\1" * 32, b"\0" * 32, 0, 1)
    err = net.reverts(create, net.accounts[1], ETHER)
    assert err.name == "TaskCannotRun"  # no card model has three nodes: the task could never start
    net.join_paused(net.accounts[6:8], GPU_A)  # now one could: the task waits
    gpt, _ = net.create_task(net.accounts[1], GPT, ETHER)
    assert net.task_status(gpt) == TaskStatus.QUEUED
    sd, receipt = net.create_task(net.accounts[1], SD, ETHER)
    assert sorted(started(net, [receipt])[sd]) == sorted([a, b, c])


def test_gpt_waits_until_one_card_model_has_three_available_nodes(net: Net):
    a1, a2, b1, b2, a3 = net.accounts[3:8]
    for node, card in ((a1, GPU_A), (a2, GPU_A), (b1, GPU_B), (b2, GPU_B)):
        net.join(node, card)
    net.join_paused([a3], GPU_A)
    task_id, receipt = net.create_task(net.accounts[1], GPT, ETHER)
    assert net.event_args(receipt, "TaskStarted") == []
    assert net.task_status(task_id) == TaskStatus.QUEUED
    receipt = net.resume(a3)
    assert sorted(started(net, [receipt])[task_id]) == sorted([a1, a2, a3])
    assert net.task_status(task_id) == TaskStatus.STARTED


def test_vram_limit_excludes_smaller_cards(net: Net):
    small = net.accounts[3:6]
    big = net.accounts[6:9]
    net.join_all(small, GPU_SMALL)
    net.join_all(big, GPU_A)
    creator = net.accounts[1]
    for task_type in (SD, GPT, SD):
        task_id, receipt = net.create_task(creator, task_type, ETHER, vram_limit=16)
        assert sorted(started(net, [receipt])[task_id]) == sorted(big)
        finish(net, task_id)
    create = net.task.functions.createTask
    err = net.reverts(create(SD, b"\1" * 32, b"\0" * 32, 25, 1), creator, ETHER)
    assert err.name == "TaskCannotRun" and err.error_args == {"taskType": SD, "vramLimit": 25}
    assert net.node.functions.canRun(SD, 24).call() and not net.node.functions.canRun(SD, 25).call()


def test_capacity_is_the_largest_vram_limit_three_available_nodes_can_serve(net: Net):
    capacity = net.node.functions.capacity
    assert capacity().call() == [False, 0, False, 0]
    net.join(net.accounts[3], GPU_SMALL)  # 12 GB
    net.join(net.accounts[4], GPU_C)  # 80 GB
    net.join(net.accounts[5], GPU_A)  # 24 GB
    assert capacity().call() == [True, 12, False, 0]  # SD up to the 3rd largest VRAM; no GPT trio
    net.join(net.accounts[6], GPU_B)  # 24 GB
    assert capacity().call() == [True, 24, False, 0]
    net.join_all(net.accounts[7:9], GPU_A)
    assert capacity().call() == [True, 24, True, 24]
    net.tx(net.node.functions.pause(), net.accounts[7])
    assert capacity().call() == [True, 24, False, 0]
    assert net.node.functions.canRun(SD, 24).call() and not net.node.functions.canRun(GPT, 0).call()


def test_selection_weights_are_qos_scores(net: Net):
    nodes = net.accounts[3:6]
    net.join_all(nodes)
    key = card_model_key(*GPU_A)
    members, weights, vram = net.node.functions.availableNodesOf(key).call()
    assert sorted(members) == sorted(nodes) and weights == [20, 20, 20] and vram == 24
    task_id, _ = net.create_task(net.accounts[1], GPT, ETHER)
    assert net.node.functions.availableNodesOf(key).call()[0] == []
    assert net.node.functions.cardModel(key).call() == [24, 0, 0, 3]  # VRAM, available, weight, joined
    selected = net.selected(task_id)
    net.run(task_id, [b"r" * 32] * 3)
    net.upload(task_id, 0, selected[0])
    members, weights, _ = net.node.functions.availableNodesOf(key).call()
    assert dict(zip(members, weights, strict=True)) == dict(zip(selected, (20, 18, 12), strict=True))
    assert net.node.functions.cardModel(key).call() == [24, 3, 50, 3]


def test_only_task_may_select_finish_or_slash(net: Net):
    node = net.accounts[3]
    net.join(node)
    fns = net.node.functions
    for call in (fns.selectNodes(1, GPT, 0, b"\0" * 32), fns.finishTask(node, False), fns.slash(node)):
        err = net.reverts(call, net.owner)
        assert err.name == "NotTask" and err.error_args == {"caller": net.owner}
    assert net.reverts(net.task.functions.onNodesAvailable(24), net.owner).name == "NotNode"
    assert net.reverts(net.task.functions.onNodeJoined(node, 24), net.owner).name == "NotNode"
    assert net.reverts(net.qos.functions.recordTaskScore(node, 20), net.owner).name == "NotTask"
    assert net.reverts(net.stats.functions.nodeJoined(node), net.owner).name == "NotNode"
