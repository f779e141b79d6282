"""What the round driver asks of the scheduler: run one job on a worker of a card model, by its deadline."""

from __future__ import annotations

from typing import Any, Protocol

from cluster.failures import FinalError
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import TaskExecutionError
from cluster.workers.messages import JobReply, JobRequest


class JobDeadlineExceeded(FinalError, TimeoutError):
    """No worker of the card model produced a result or a task error before the job's deadline: final,
    since the round's deadline is the job's."""

    def __init__(self, message: str, *, attempts: int, last_error: TaskExecutionError | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error

    def __reduce__(self) -> tuple[Any, ...]:  # whole across processes (a job a round driver asked for)
        return (_job_deadline_exceeded, (str(self), self.attempts, self.last_error))


def _job_deadline_exceeded(
    message: str, attempts: int, last_error: TaskExecutionError | None
) -> JobDeadlineExceeded:
    return JobDeadlineExceeded(message, attempts=attempts, last_error=last_error)


class JobRunner(Protocol):
    """Runs a job on a worker of a card model (``WorkerPool``; tests run engines in-process)."""

    async def run_job(self, card: CardModel, request: JobRequest) -> JobReply:
        """The worker's reply: the job's files and result, or its task error (REPORT action), with the
        attempts it took; ``JobDeadlineExceeded`` past ``request.deadline_unix_s``.

        Transient failures (a lost worker, memory, a model not yet in the cache) are retried inside.
        """
        ...
