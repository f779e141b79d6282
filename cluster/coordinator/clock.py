"""Chain time as the coordinator reckons it, and the one conversion to the workers' clock.

Two clocks meet in a round: the chain's (a task's deadline is a block timestamp, in seconds) and the
host's (the worker pool waits on ``time.time()``). Names say which: ``*_chain_s`` is chain time,
``*_unix_s`` the host's.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ChainClock:
    """Chain time from the latest block seen, moved on by the host's clock between blocks.

    ``now_s`` is the earliest timestamp the next block can carry: the latest block's, or the host's clock
    when that is later. Block timestamps follow the wall clock, but a quiet chain mines no blocks (anvil
    mines on demand), so the latest block alone would never reach a deadline. A cancel sent a little
    early is refused by the chain and sent again; one sent late costs nothing.
    """

    def __init__(self, wall_clock: Callable[[], float] = time.time):
        self.wall_clock = wall_clock
        self.latest_block_s = 0.0

    def observe_block(self, timestamp_s: float) -> None:
        """Record the timestamp of the chain's latest block (it never moves back)."""
        self.latest_block_s = max(self.latest_block_s, float(timestamp_s))

    def now_s(self) -> float:
        return max(self.latest_block_s, self.wall_clock())

    def seconds_left(self, deadline_chain_s: float) -> float:
        return deadline_chain_s - self.now_s()

    def is_past(self, deadline_chain_s: float) -> bool:
        return self.seconds_left(deadline_chain_s) < 0

    def to_unix_s(self, deadline_chain_s: float) -> float:
        """The host-clock moment at which ``deadline_chain_s`` is reached: what the worker pool waits on."""
        return self.wall_clock() + self.seconds_left(deadline_chain_s)
