"""The batched worker: one async Ray actor per GPU (or per ``kx`` GPU group) for ``rig.gpu_sharing=batched``.

Its ``rig.places_per_gpu`` concurrent jobs run on the actor's event loop. A GPT job is one request to
vLLM's async engine, which batches the requests in flight (continuous batching, batch-invariant, a
seed per request); each job awaits its own request, so a failing request fails its job only. An SD job
runs alone in a thread (diffusers does not batch across tasks): image jobs wait for each other, never
for the GPT requests.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import ray

from cluster.config import EngineConfig, RigConfig
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.task import TaskArgs
from cluster.workers.engines.base import ImageResult, TextResult
from cluster.workers.engines.text_vllm_async import AsyncVllmTextEngine
from cluster.workers.models.store import ModelStore
from cluster.workers.worker import WorkerBase


class BatchedGpuWorker(WorkerBase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_ids = itertools.count()  # vLLM request ids: unique within this worker's engines
        self._image_turn = asyncio.Lock()  # binds to the actor's loop at its first use

    def _engines(self, engine: EngineConfig, rig: RigConfig, store: ModelStore) -> tuple[Any, Any]:
        from cluster.workers.engines.image_diffusers import DiffusersImageEngine

        text = AsyncVllmTextEngine(
            store,
            self.cache,
            gpu_memory_utilization=rig.vram_budget_fraction,
            tensor_parallel_size=self.num_gpus,
        )
        return text, DiffusersImageEngine(store, self.cache, rig.device)

    async def _execute(self, args: TaskArgs) -> TextResult | ImageResult:
        """Concurrent GPT jobs share vLLM's batches; an image job runs alone in a thread."""
        if isinstance(args, GPTTaskArgs):
            return await self.text.run(args, f"{self.worker_id}-{next(self._request_ids)}")
        async with self._image_turn:
            return await asyncio.to_thread(self.image.run, args)


BatchedGpuWorkerActor = ray.remote(BatchedGpuWorker)
