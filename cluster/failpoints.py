"""Failpoints: named points of a round, or of a node's bring-up, where a test may stop the process.

Production passes ``NO_FAILPOINTS``, which does nothing. The restart tests set ``checkpoint`` and kill
the coordinator there (``tests/coordinator/crash_runner.py``): the points are where a crash is most
instructive (before and after each transaction, before and after the upload).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Checkpoint = Callable[[str, str], None]  # (point, subject): ("before_commit", "task=12:round=1")


@dataclass(frozen=True)
class Failpoints:
    checkpoint: Checkpoint | None = None

    def reached(self, point: str, subject: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(point, subject)


NO_FAILPOINTS = Failpoints()
