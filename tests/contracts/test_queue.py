"""TaskQueue: value = fee / estimated time, groups by (type, vramLimit), dequeue on free nodes, size limit."""

from __future__ import annotations

from cluster.chain.contracts import AbortReason, TaskStatus, TaskType
from tests.contracts.net import ETHER, GPU_A, GPU_C, Net

SD, GPT = TaskType.SD, TaskType.GPT


def finish(net: Net, task_id: int) -> list:
    return [net.report_error(task_id, r) for r in range(3)]


def started_ids(net: Net, receipts) -> list[int]:
    ids = [e["taskId"] for r in receipts for e in net.event_args(r, "TaskStarted")]
    return list(dict.fromkeys(ids))


def test_estimates_are_fixed_point_milliseconds(net: Net):
    estimate = net.queue.functions.estimatedMs
    assert estimate(SD, 1).call() == 50_000  # 20 s + 30 s per image
    assert estimate(SD, 4).call() == 140_000
    assert estimate(GPT, 256).call() == 10_000 + 256 * 50  # 10 s + 0.05 s per token
    assert net.reverts(net.queue.functions.setPriceEstimate(GPT, 1, 1), net.accounts[1]).name == "NotOwner"
    net.tx(net.queue.functions.setPriceEstimate(GPT, 5_000, 20), net.owner)
    assert estimate(GPT, 100).call() == 7_000
    assert (
        net.reverts(net.queue.functions.setPriceEstimate(SD, 0, 1), net.owner).name == "InvalidPriceEstimate"
    )


def test_highest_value_runs_first_when_nodes_become_available(net: Net):
    creator = net.accounts[1]
    a, b, c = net.accounts[3:6]
    net.join_paused([a, b, c])
    t_sd_1, _ = net.create_task(creator, SD, ETHER, cap=1)  # 1 CNX / 50 s
    t_sd_3, _ = net.create_task(creator, SD, ETHER, cap=3)  # 1 CNX / 110 s
    t_sd_hi, _ = net.create_task(creator, SD, 2 * ETHER, cap=1)  # 2 CNX / 50 s
    t_gpt, _ = net.create_task(creator, GPT, ETHER, cap=1000)  # 1 CNX / 60 s
    assert net.task_counters()["queued"] == 4
    net.resume(a)
    net.resume(b)
    order = started_ids(net, [net.resume(c)])
    for _ in range(3):
        order += started_ids(net, finish(net, order[-1]))
    assert order == [t_sd_hi, t_sd_1, t_gpt, t_sd_3]
    assert net.queue.functions.size().call() == 0


def test_equal_values_run_first_come_first_served(net: Net):
    creator = net.accounts[1]
    net.join_paused(net.accounts[3:6])
    older, _ = net.create_task(creator, GPT, ETHER, cap=1000)  # 1 CNX / 60 s
    newer, _ = net.create_task(creator, GPT, 2 * ETHER, cap=2200)  # 2 CNX / 120 s: the same value
    highest, _ = net.create_task(creator, GPT, ETHER, cap=0)  # 1 CNX / 10 s
    assert net.queue.functions.queuedTaskIds().call() == [highest, older, newer]
    net.resume(net.accounts[3])
    net.resume(net.accounts[4])
    order = started_ids(net, [net.resume(net.accounts[5])])
    for _ in range(2):
        order += started_ids(net, finish(net, order[-1]))
    assert order == [highest, older, newer]


def test_a_group_the_nodes_cannot_take_waits_while_others_start(net: Net):
    creator = net.accounts[1]
    net.join_all(net.accounts[3:6], GPU_A)  # 24 GB
    net.join_paused(net.accounts[6:9], GPU_C)  # 80 GB, paused: the task could run, not now
    big, _ = net.create_task(creator, SD, 10 * ETHER, vram_limit=48)
    assert net.task_status(big) == TaskStatus.QUEUED
    small, receipt = net.create_task(creator, SD, ETHER, vram_limit=16)  # starts at once, although big waits
    assert started_ids(net, [receipt]) == [small]
    receipts = finish(net, small)
    assert started_ids(net, receipts) == []  # 24 GB nodes free again: still not enough for big
    net.resume(net.accounts[6])
    net.resume(net.accounts[7])
    receipt = net.resume(net.accounts[8])
    assert started_ids(net, [receipt]) == [big]
    assert set(net.selected(big)) == set(net.accounts[6:9])


def test_resume_starts_a_queued_task(net: Net):
    a, b, c = net.accounts[3:6]
    net.join_all([a, b, c])
    net.tx(net.node.functions.pause(), c)
    task_id, _ = net.create_task(net.accounts[1], GPT, ETHER)
    assert net.task_status(task_id) == TaskStatus.QUEUED
    receipt = net.tx(net.node.functions.resume(), c)
    assert started_ids(net, [receipt]) == [task_id]
    assert net.event_args(receipt, "TaskDequeued") == [{"taskId": task_id}]


def test_full_queue_evicts_the_lowest_value_task_and_refunds_it(net: Net):
    creator, rich = net.accounts[1], net.accounts[2]
    limit = net.queue.functions.sizeLimit().call()
    assert limit == 50
    net.join_paused(net.accounts[3:6])
    ids = [net.create_task(creator, SD, ETHER, cap=1)[0] for _ in range(limit - 1)]
    cheap, _ = net.create_task(creator, SD, ETHER, cap=2)  # the lowest value: 1 CNX / 80 s
    net.mine_after(60)  # it waits a minute in the queue: the refund is its fee less that rent
    new, receipt = net.create_task(rich, GPT, ETHER, cap=1)
    assert net.event_args(receipt, "TaskAborted") == [{"taskId": cheap, "reason": AbortReason.FEE_TOO_LOW}]
    # the fee back, less the queue's rent (10% an hour) for the minute or so it waited
    rent = sum(e["amount"] for e in net.event_args(receipt, "QueueRentPaid") if e["taskId"] == cheap)
    assert ETHER // 600 <= rent < ETHER // 500
    assert net.event_args(receipt, "TaskFeeRefunded") == [
        {"taskId": cheap, "creator": creator, "amount": ETHER - rent}
    ]
    assert net.task_status(cheap) == TaskStatus.NONE and net.task_status(new) == TaskStatus.QUEUED
    assert net.queue.functions.size().call() == limit
    assert net.ledger.received(creator) == -ETHER * (limit - 1) - rent
    # Among equal lowest values the newest is evicted: the older tasks keep their places.
    _newer, receipt = net.create_task(rich, SD, 2 * ETHER, cap=1)
    assert net.event_args(receipt, "TaskAborted")[0]["taskId"] == ids[-1]
    assert net.task_counters() == {
        "total": limit + 2,
        "queued": limit,
        "running": 0,
        "succeeded": 0,
        "aborted": 2,
    }


def test_full_queue_rejects_a_task_of_lower_or_equal_value(net: Net):
    creator = net.accounts[1]
    net.tx(net.queue.functions.setSizeLimit(2), net.owner)
    net.join_paused(net.accounts[3:6])
    net.create_task(creator, SD, ETHER, cap=1)
    net.create_task(creator, SD, 2 * ETHER, cap=1)
    create = net.task.functions.createTask
    err = net.reverts(create(SD, b"\1" * 32, b"\0" * 32, 0, 2), creator, ETHER)  # 1 CNX / 80 s
    assert err.name == "TaskFeeTooLow"
    assert err.error_args == {
        "fee": ETHER,
        "estimatedMs": 80_000,
        "lowestFee": ETHER,
        "lowestEstimatedMs": 50_000,
    }
    assert net.reverts(create(SD, b"\1" * 32, b"\0" * 32, 0, 1), creator, ETHER).name == "TaskFeeTooLow"
    assert net.task_counters()["total"] == 2  # a rejected task never existed
    assert net.reverts(net.queue.functions.setSizeLimit(0), net.owner).name == "InvalidSizeLimit"


def test_only_task_changes_the_queue(net: Net):
    err = net.reverts(net.queue.functions.remove(1), net.owner)
    assert err.name == "NotTask" and err.error_args == {"caller": net.owner}
    assert net.reverts(net.queue.functions.popRunnable(), net.owner).name == "NotTask"
