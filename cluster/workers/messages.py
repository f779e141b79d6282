"""What crosses the Ray boundary between the coordinator's pool and a GPU worker: frozen, typed values.

A job goes in as ``JobRequest`` and comes back as ``JobReply``; a task's failure travels inside the
reply as the taxonomy's exception (``cluster.protocol.errors``), never as a raised error. ``WorkerInfo``
is what a worker says of itself for the status and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.protocol.cards import CardModel
from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.task import TaskType


@dataclass(frozen=True, slots=True)
class JobRequest:
    task_type: TaskType
    args_json: str  # the task arguments exactly as uploaded
    deadline_unix_s: float | None = None  # past it the engine stops (the pool no longer waits)


@dataclass(frozen=True, slots=True)
class JobReply:
    files: tuple[bytes, ...] = ()  # the result files in index order; empty with an error
    result: bytes = b""  # the bytes to commit on chain; empty with an error
    error: TaskExecutionError | None = None  # REPORT: the task's fault; RETRY: the pool tries again
    loaded_models: frozenset[str] = frozenset()  # warm in the worker's cache after this job
    engine_s: float = 0.0  # the engine's time on this job (loading and inference), measured in the worker

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
