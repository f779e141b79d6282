"""What crosses the Ray boundary between the coordinator's pool and a GPU worker: frozen, typed values.

A job goes in as ``JobRequest``, carrying the task's arguments already parsed (whoever takes arguments in
parses them, once: the round driver, the reference check) and the time past which nobody waits for it. It
comes back as ``JobReply``; a task's failure travels inside the reply as the taxonomy's exception
(``cluster.protocol.errors``), never as a raised error. ``WorkerInfo`` is what a worker says of itself for
the status and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.protocol.cards import CardModel
from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.task import TaskArgs, TaskType, task_model, task_type_of


@dataclass(frozen=True, slots=True)
class JobRequest:
    args: TaskArgs  # validated task arguments (``parse_task_args``): never parsed again
    deadline_unix_s: float  # ``time.time()`` seconds: the pool stops waiting there, the engine stops too
    task_id: int | None = None  # the chain task whose round this job runs; None: a reference job
    round: int | None = None

    @property
    def task_type(self) -> TaskType:
        return task_type_of(self.args)

    @property
    def model(self) -> str:
        """The model the job runs: what a worker that holds it warm serves sooner."""
        return task_model(self.args)

    @property
    def name(self) -> str:
        """For logs: ``task=12:round=1``, or ``reference`` for a job that runs no chain task."""
        return "reference" if self.task_id is None else f"task={self.task_id}:round={self.round}"


@dataclass(frozen=True, slots=True)
class JobReply:
    worker_id: str  # the worker that answered
    files: tuple[bytes, ...] = ()  # the result files in index order; empty with an error
    result: bytes = b""  # the bytes to commit on chain; empty with an error
    error: TaskExecutionError | None = None  # REPORT: the task's fault; RETRY: the pool tries again
    loaded_models: frozenset[str] = frozenset()  # warm in the worker's cache after this job
    engine_s: float = 0.0  # the engine's time on this job (loading and inference), measured in the worker
    attempts: int = 1  # the pool's tries until this reply (a lost worker or a transient error retried)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    index: int
    card: CardModel
    num_running: int
    num_jobs: int
    pid: int
    num_torch_threads: int  # part of the numerics on a CPU rig
    node_id: str
    gpu_utilization: float | None = None  # 0..1, from NVML; None on a CPU rig
    gpu_memory_used_bytes: float | None = None
    cache_used_bytes: int | None = None  # the worker's warm models (what stands for VRAM on a CPU rig)
    cache_budget_bytes: int | None = None

    @property
    def is_busy(self) -> bool:
        return self.num_running > 0
