"""A job runner that runs the real engines in this process, for coordinator and bridge tests without Ray.

The Ray worker pool (cluster.coordinator.scheduling.pool) has its own tests; here the coordinator's rounds
are what is under test, so jobs run on the same engines in a thread, one at a time (2 cores). ``gate``,
cleared, makes every job wait: a test can hold a task in the middle (started on chain, no result yet).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from cluster.protocol.cards import CardModel
from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.task import TaskType
from cluster.workers.messages import JobReply, JobRequest
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

WORKER_ID = "local"


class LocalJobRunner:
    def __init__(self, cache_dir: Path):
        self.store = ModelStore(cache_dir, is_offline=True)
        self.gate = threading.Event()
        self.gate.set()
        self.num_jobs = 0
        self._engines: dict[TaskType, Any] = {}
        self._lock = threading.Lock()

    def _engine(self, task_type: TaskType) -> Any:
        if task_type not in self._engines:  # diffusers loads slowly: only for the tests that run SD
            if task_type is TaskType.GPT:
                from cluster.workers.engines.text_transformers import TransformersTextEngine as Engine
            else:
                from cluster.workers.engines.image_diffusers import DiffusersImageEngine as Engine
            self._engines[task_type] = Engine(self.store, ModelCache(budget_bytes=1024**3), "cpu")
        return self._engines[task_type]

    def _run(self, request: JobRequest) -> Any:
        self.gate.wait()
        with self._lock:
            return self._engine(request.task_type).run(request.args)

    async def run_job(self, card: CardModel, request: JobRequest) -> JobReply:
        self.num_jobs += 1
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(self._run, request)
        except TaskExecutionError as exc:
            if not exc.is_task_error:
                raise  # transient: the round driver retries it
            return JobReply(WORKER_ID, error=exc)
        engine_s = time.perf_counter() - started
        return JobReply(WORKER_ID, tuple(outcome.files), outcome.result, engine_s=engine_s)
