"""A job runner that runs the real engines in this process, for coordinator tests without Ray.

The Ray worker pool (cluster.workers.pool) has its own tests; here the coordinator's flow is what is
under test, so the jobs run on the same engines in threads. ``corrupt`` slots flip their result files.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.task import TaskType, parse_task_args
from cluster.workers.engines.text_transformers import TransformersTextEngine
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore


@dataclass(frozen=True)
class LocalJob:
    files: list[bytes]
    result: bytes
    error: TaskExecutionError | None = None


class LocalJobRunner:
    def __init__(self, cache_dir: Path):
        self.engine = TransformersTextEngine(
            ModelStore(cache_dir, is_offline=True), ModelCache(budget_bytes=1024**3), "cpu"
        )
        self.num_jobs = 0

    async def run_job(
        self, card_key: bytes, task_type: int, args_json: str, *, deadline: float, model_hint: str | None
    ) -> LocalJob:
        self.num_jobs += 1
        try:
            args = parse_task_args(task_type, args_json)
            if task_type != TaskType.GPT:
                raise NotImplementedError("the local runner serves GPT jobs")
            result = await asyncio.to_thread(self.engine.run, args)  # type: ignore[arg-type]
        except TaskExecutionError as exc:
            if not exc.is_task_error:
                raise
            return LocalJob([], b"", exc)
        return LocalJob(result.files, result.result)
