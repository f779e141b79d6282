"""How the coordinator fans the chain's events out to its round drivers, and when the driver count may
change: plain Python (no Ray, no chain), the fleet's routing over a real store."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_account import Account

from cluster.chain.accounts import OperatorKeys
from cluster.chain.contracts import Events, TaskType
from cluster.chain.events import ChainEvent
from cluster.config import ConfigError, round_drivers_for
from cluster.coordinator.drivers import fleet as fleet_module
from cluster.coordinator.drivers.fleet import DriverFleet, check_driver_count
from cluster.coordinator.drivers.guard import Sibling
from cluster.coordinator.nodes import NodeSet
from cluster.coordinator.round_state import NodeTask, Step
from cluster.coordinator.store import PendingTask, RoundStore
from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.task import parse_task_args
from cluster.workers.messages import JobReply, JobRequest
from tests.coordinator.factories import CARD, gpt_args

OUTSIDER = "0x" + "7" * 40
ARGS = parse_task_args(TaskType.GPT, gpt_args(Path("tiny-lm")))
HASH = b"\x11" * 32


def event(name: str, task_id: int, log_index: int, **args) -> ChainEvent:
    return ChainEvent("Task", name, {"taskId": task_id, **args}, block_number=5, log_index=log_index,
                      tx_hash="0x" + "ab" * 32, address="0x" + "5" * 40, block_time_s=1_000)  # fmt: skip


def started(task_id: int, round_: int, node: str, log_index: int, task_hash: bytes = HASH) -> ChainEvent:
    return event(Events.TASK_STARTED, task_id, log_index, taskType=0, creator=OUTSIDER, selectedNode=node,
                 taskHash=task_hash, round=round_)  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> DriverFleet:
    _, mnemonic = Account.create_with_mnemonic()
    nodes = NodeSet(OperatorKeys.from_mnemonic(mnemonic))
    nodes.add((index, CARD) for index in range(4))  # indices 0, 2 -> driver 0; 1, 3 -> driver 1
    coordinator = SimpleNamespace(
        store=RoundStore(tmp_path), nodes=nodes, settings=SimpleNamespace(state_dir=tmp_path)
    )
    return DriverFleet(coordinator, 2)  # type: ignore[arg-type]


def route(
    fleet: DriverFleet, events: list[ChainEvent]
) -> tuple[dict[int, list[str]], dict[int, dict[int, PendingTask]]]:
    pages: dict[int, list[ChainEvent]] = defaultdict(list)
    caps: dict[int, dict[int, PendingTask]] = defaultdict(dict)
    with fleet.store.transaction():
        for one in events:
            fleet._route(one, pages, caps)
    return {index: [e.name for e in page] for index, page in pages.items()}, dict(caps)


def test_each_driver_gets_the_events_of_its_own_rounds_and_the_timing_settings(fleet):
    first, second = fleet.coordinator.nodes.accounts[0].address, fleet.coordinator.nodes.accounts[1].address
    pages, caps = route(fleet, [
        event(Events.TASK_PENDING, 1, 0, taskType=0, creator=OUTSIDER, taskHash=HASH, vramLimit=0, cap=77,
              fee=10),
        started(1, 0, first, 1), started(1, 1, second, 2), started(1, 2, OUTSIDER, 3),
        started(2, 0, OUTSIDER, 4), started(2, 1, OUTSIDER, 5), started(2, 2, OUTSIDER, 6),
        event(Events.TASK_TIMEOUT_SET, 0, 7, taskTimeout=600),
        event(Events.TASK_RESULT_COMMITMENTS_READY, 1, 8), event(Events.TASK_RESULT_COMMITMENTS_READY, 2, 9),
    ])  # fmt: skip
    assert pages == {
        0: [Events.TASK_STARTED, Events.TASK_TIMEOUT_SET, Events.TASK_RESULT_COMMITMENTS_READY],
        1: [Events.TASK_STARTED, Events.TASK_TIMEOUT_SET, Events.TASK_RESULT_COMMITMENTS_READY],
    }  # a task none of the farm's accounts runs reaches no driver
    # the cap (and the hash) travel with the TaskStarted they belong to
    assert caps == {0: {1: PendingTask(77, HASH)}, 1: {1: PendingTask(77, HASH)}}
    assert fleet.store.pending_cap(1) is None  # forgotten once the task's last round started
    assert fleet.routes == {1: {0: first, 1: second}}


def test_a_sampled_task_s_sampling_and_hash_reach_its_audit_rounds(fleet):
    first, second = fleet.coordinator.nodes.accounts[0].address, fleet.coordinator.nodes.accounts[1].address
    pending = event(Events.TASK_PENDING, 1, 0, taskType=0, creator=OUTSIDER, taskHash=HASH, vramLimit=0,
                    cap=5, fee=10)  # fmt: skip
    sampled = event(Events.TASK_SAMPLED, 1, 1, auditRate=10, resultAfterAudit=True)
    pages, caps = route(fleet, [pending, sampled, started(1, 0, OUTSIDER, 2)])
    assert pages == {} and fleet.store.pending(1) == PendingTask(5, HASH, 10, True)  # kept for an audit
    auditors = {"auditor1": first, "auditor2": second}
    audit_started = event(Events.TASK_AUDIT_STARTED, 1, 6, firstNode=OUTSIDER, **auditors)
    audit = [event(Events.TASK_AUDIT_DRAWN, 1, 3, isAudited=True),
             started(1, 1, first, 4, task_hash=bytes(32)), started(1, 2, second, 5, task_hash=bytes(32)),
             audit_started]  # fmt: skip
    pages, caps = route(fleet, audit)
    assert caps == {0: {1: PendingTask(5, HASH, 10, True)}, 1: {1: PendingTask(5, HASH, 10, True)}}
    assert pages[0] == pages[1] == [Events.TASK_STARTED, Events.TASK_AUDIT_STARTED]
    assert fleet.store.pending(1) is None  # the audit's last round started

    route(fleet, [event(Events.TASK_PENDING, 2, 0, taskType=0, creator=OUTSIDER, taskHash=HASH, vramLimit=0,
                        cap=5, fee=10),
                  event(Events.TASK_SAMPLED, 2, 1, auditRate=10, resultAfterAudit=False),
                  started(2, 0, first, 2)])  # fmt: skip
    assert fleet.store.pending(2) is not None
    pages, _ = route(fleet, [event(Events.TASK_AUDIT_DRAWN, 2, 3, isAudited=False)])
    assert pages == {0: [Events.TASK_AUDIT_DRAWN]} and fleet.store.pending(2) is None  # no audit will start


def test_a_round_s_route_ends_with_its_settlement(fleet):
    first, third = fleet.coordinator.nodes.accounts[0].address, fleet.coordinator.nodes.accounts[2].address
    route(fleet, [started(3, 0, first, 0), started(3, 1, third, 1), started(3, 2, OUTSIDER, 2)])
    assert fleet.routes == {3: {0: first, 1: third}}  # both on driver 0
    pages, _ = route(fleet, [event(Events.TASK_NODE_SUCCESS, 3, 3, node=first, fee=5)])
    assert pages == {0: [Events.TASK_NODE_SUCCESS]} and fleet.routes == {3: {1: third}}
    pages, _ = route(fleet, [event(Events.TASK_NODE_SUCCESS, 3, 4, node=third, fee=5)])
    assert pages == {0: [Events.TASK_NODE_SUCCESS]} and fleet.routes == {}
    pages, _ = route(fleet, [event(Events.TASK_NODE_SUCCESS, 3, 5, node=OUTSIDER, fee=5)])
    assert pages == {}  # the task's rounds of the farm are settled: nothing more to hand out


def test_the_default_driver_count_follows_the_places_and_the_rig_setting_wins():
    assert [round_drivers_for(places, None) for places in (24, 999, 1_000, 1_001, 4_000)] == [0, 0, 1, 2, 4]
    assert round_drivers_for(24, 3) == 3 and round_drivers_for(4_000, 0) == 0


def test_the_driver_count_changes_only_once_the_old_split_has_no_unfinished_round(tmp_path: Path):
    own = RoundStore(tmp_path)
    check_driver_count(tmp_path, 2, own)  # a new farm: any count
    busy = NodeTask(task_id=1, round=0, node=OUTSIDER, task_type=0, task_hash=HASH, step=Step.SELECTED,
                    deadline_chain_s=2_000)  # fmt: skip
    driver_rows = RoundStore(tmp_path / "drivers" / "1")
    driver_rows.add(busy)
    with pytest.raises(ConfigError, match="from 2 to 4 with 1 round"):
        check_driver_count(tmp_path, 4, own)
    driver_rows.patch(1, 0, step=Step.DONE)
    driver_rows.close()
    check_driver_count(tmp_path, 4, own)
    assert (tmp_path / "drivers" / "count").read_text() == "4"
    assert not (tmp_path / "drivers" / "1").exists()  # the old split's rows are kept aside, not reused
    assert [p.name.split("-")[:3] for p in tmp_path.glob("drivers-*")] == [["drivers", "2", "1"]]


class FakeDriver:
    """A driver's handle as the fleet calls it: ``sibling.remote`` answers from its rows."""

    def __init__(self, rows: dict[tuple[int, int], Sibling]):
        self.rows = rows
        self.asked: list[tuple[int, int]] = []
        self.sibling = SimpleNamespace(remote=self._sibling)

    async def _sibling(self, task_id: int, round_: int) -> Sibling | None:
        self.asked.append((task_id, round_))
        return self.rows.get((task_id, round_))


def test_the_guard_asks_a_driver_only_for_a_round_without_a_result_after_its_wait(fleet, monkeypatch):
    monkeypatch.setattr(fleet_module, "SIBLING_WAIT_S", 0.0)
    accounts = fleet.coordinator.nodes.accounts
    route(
        fleet, [started(9, r, accounts[r].address, r) for r in range(3)]
    )  # rounds 0, 2: driver 0; 1: driver 1
    drivers = [FakeDriver({(9, 2): Sibling(2, True, None)}), FakeDriver({(9, 1): Sibling(1, False, b"\xbb")})]
    fleet.handles = drivers
    found = asyncio.run(fleet.siblings(9, 0, {0: b"\xaa", 1: b"\xbb"}))
    assert sorted(found, key=lambda s: s.round) == [Sibling(1, False, b"\xbb"), Sibling(2, True, None)]
    assert drivers[0].asked == [(9, 2)] and drivers[1].asked == []  # round 1 had asked: its result is known


def test_a_sibling_s_job_passing_through_the_pool_answers_the_guard_without_a_driver_call(fleet):
    accounts = fleet.coordinator.nodes.accounts
    route(fleet, [started(4, r, accounts[r].address, r) for r in range(3)])
    drivers = [FakeDriver({}), FakeDriver({})]
    fleet.handles = drivers

    async def main() -> list[Sibling]:
        waiting = asyncio.create_task(fleet.siblings(4, 0, {0: b"\xaa"}))
        await asyncio.sleep(0)
        fleet.job_done(JobRequest(ARGS, 0.0, task_id=4, round=1), JobReply("w", (), b"\xaa"))
        await asyncio.sleep(0)
        assert not waiting.done()  # round 2's job is still out: the guard waits for it
        fleet.job_done(
            JobRequest(ARGS, 0.0, task_id=4, round=2), JobReply("w", error=ArgumentsInvalid("bad"))
        )
        return await asyncio.wait_for(waiting, 5)

    found = asyncio.run(main())
    assert sorted(found, key=lambda s: s.round) == [Sibling(1, False, b"\xaa"), Sibling(2, False, None)]
    assert drivers[0].asked == drivers[1].asked == []  # a task error is a sibling with no result to compare
