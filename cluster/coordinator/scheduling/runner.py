"""What the round driver asks of the scheduler: run one job on a worker of a card model, by a deadline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cluster.protocol.cards import CardModel
from cluster.protocol.errors import TaskExecutionError
from cluster.workers.messages import JobRequest


class JobDeadlineExceeded(TimeoutError):
    """No worker of the card model produced a result or a task error before the job's deadline."""

    def __init__(self, message: str, *, attempts: int, last_error: TaskExecutionError | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


@dataclass(frozen=True, slots=True)
class JobResult:
    files: tuple[bytes, ...]
    result: bytes  # the bytes to commit on chain; empty with an error
    error: TaskExecutionError | None  # a task error (REPORT action): the node reports it on chain
    worker_id: str
    attempts: int
    engine_s: float = 0.0  # the engine's time on the attempt that answered (loading and inference)

    @property
    def ok(self) -> bool:
        return self.error is None


class JobRunner(Protocol):
    """Runs a job on a worker of a card model (``WorkerPool``; tests run engines in-process)."""

    async def run_job(
        self, card: CardModel, request: JobRequest, *, deadline_unix_s: float, model_hint: str | None = None
    ) -> JobResult:
        """The job's files and result, or its task error; ``JobDeadlineExceeded`` past the deadline.

        Transient failures (a lost worker, memory, a model not yet in the cache) are retried inside.
        """
        ...
