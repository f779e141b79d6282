"""Chain time as the coordinator reckons it: the latest block, moved on by the host's clock."""

from __future__ import annotations

from cluster.coordinator.clock import ChainClock


class FakeWallClock:
    def __init__(self, now_s: float):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def test_a_quiet_chain_still_reaches_its_deadline_by_the_host_clock() -> None:
    wall = FakeWallClock(1_000.0)
    clock = ChainClock(wall)
    clock.observe_block(990.0)  # anvil mines no block while nothing happens
    assert clock.now_s() == 1_000.0 and not clock.is_past(1_005.0)
    wall.now_s = 1_006.0
    assert clock.is_past(1_005.0) and clock.seconds_left(1_005.0) == -1.0


def test_a_block_ahead_of_the_host_clock_wins_and_time_never_moves_back() -> None:
    wall = FakeWallClock(1_000.0)
    clock = ChainClock(wall)
    clock.observe_block(1_010.0)
    clock.observe_block(1_004.0)  # an older block (a lagging RPC node) does not move time back
    assert clock.now_s() == 1_010.0 and clock.seconds_left(1_030.0) == 20.0


def test_a_chain_deadline_becomes_the_host_moment_the_pool_waits_for() -> None:
    wall = FakeWallClock(5_000.0)
    clock = ChainClock(wall)
    clock.observe_block(5_010.0)  # chain time runs 10 s ahead of this host
    assert clock.to_unix_s(5_100.0) == 5_090.0  # 90 s of chain time left: 90 s of host time


def test_the_timeline_keeps_first_marks_sums_spent_time_and_forgets_the_oldest_rounds() -> None:
    from cluster.coordinator.timeline import RoundTimeline

    timeline = RoundTimeline(max_rounds=2)
    timeline.mark("task=1:round=0", "selected")
    first = timeline.of("task=1:round=0")["selected"]
    timeline.mark("task=1:round=0", "selected")  # a replayed event does not move the stage
    timeline.spent("task=1:round=0", "chain_s", 0.5)
    timeline.spent("task=1:round=0", "chain_s", 0.25)
    assert timeline.of("task=1:round=0") == {"selected": first, "chain_s": 0.75}
    timeline.mark("task=2:round=0", "selected")
    timeline.mark("task=3:round=0", "selected")
    assert list(timeline.all()) == ["task=2:round=0", "task=3:round=0"]
