"""A job runner for the bridge tests: the real transformers and diffusers engines in threads, no Ray.

Like tests/coordinator/local_runner.py, plus SD jobs, plus a ``gate``: cleared, every job waits, so a test
can hold a task in the middle (started on chain, no result yet).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.task import TaskType, parse_task_args
from cluster.workers.engines.image_diffusers import DiffusersImageEngine
from cluster.workers.engines.text_transformers import TransformersTextEngine
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore
from tests.coordinator.local_runner import LocalJob


class TextAndImageRunner:
    def __init__(self, cache_dir: Path):
        store = ModelStore(cache_dir, is_offline=True)
        self.text = TransformersTextEngine(store, ModelCache(budget_bytes=1024**3), "cpu")
        self.image = DiffusersImageEngine(store, ModelCache(budget_bytes=1024**3), "cpu")
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()  # one job at a time: 2 cores

    def _run(self, task_type: int, args_json: str):
        self.gate.wait()
        with self._lock:
            args = parse_task_args(task_type, args_json)
            engine = self.text if task_type == TaskType.GPT else self.image
            return engine.run(args)  # type: ignore[arg-type]

    async def run_job(
        self, card_key: bytes, task_type: int, args_json: str, *, deadline: float, model_hint: str | None
    ) -> LocalJob:
        try:
            result = await asyncio.to_thread(self._run, task_type, args_json)
        except TaskExecutionError as exc:
            if not exc.is_task_error:
                raise
            return LocalJob([], b"", exc)
        return LocalJob(result.files, result.result)
