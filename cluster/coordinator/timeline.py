"""When each round passed each stage, and how long its job and transactions took: in memory only.

The store keeps where a round is; this keeps how it got there, for the status (seconds so far) and for
benchmarks/cluster_overhead.py, which splits a round's time into inference, waiting for the chain and
the cluster's own overhead. Bounded: the oldest rounds are forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict

MAX_ROUNDS = 10_000


class RoundTimeline:
    def __init__(self, max_rounds: int = MAX_ROUNDS):
        self.max_rounds = max_rounds
        self._rounds: OrderedDict[str, dict[str, float]] = OrderedDict()

    def mark(self, key: str, stage: str) -> None:
        """The round ``key`` reached ``stage`` now (the first time counts)."""
        self._of(key).setdefault(stage, time.time())

    def spent(self, key: str, what: str, seconds: float) -> None:
        """The round ``key`` spent ``seconds`` on ``what`` (a job's engine, a transaction's mining)."""
        stages = self._of(key)
        stages[what] = stages.get(what, 0.0) + seconds

    def of(self, key: str) -> dict[str, float]:
        return dict(self._rounds.get(key, {}))

    def all(self) -> dict[str, dict[str, float]]:
        return {key: dict(stages) for key, stages in self._rounds.items()}

    def _of(self, key: str) -> dict[str, float]:
        stages = self._rounds.get(key)
        if stages is None:
            stages = self._rounds[key] = {}
            while len(self._rounds) > self.max_rounds:
                self._rounds.popitem(last=False)
        return stages
