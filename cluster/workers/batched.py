"""The batched worker: one async Ray actor per GPU (or per ``kx`` GPU group) for ``rig.slot_mode=batched``.

Its ``rig.slots_per_gpu`` concurrent jobs run on the actor's event loop. A GPT job is one request to
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
from cluster.protocol.task import parse_task_args, task_model
from cluster.workers.engines.deadline import job_deadline
from cluster.workers.engines.text_vllm_async import AsyncVllmTextEngine
from cluster.workers.messages import JobReply, JobRequest
from cluster.workers.models.store import ModelStore
from cluster.workers.worker import WorkerBase


@ray.remote
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

    async def run_job(self, request: JobRequest) -> JobReply:
        """The job's files and result, or its error; concurrent GPT jobs share vLLM's batches."""
        started = self._begin()
        try:
            args = parse_task_args(request.task_type, request.args_json)
        except Exception as exc:
            return self._end(started, self._failed(request, exc))
        if not isinstance(args, GPTTaskArgs):
            async with self._image_turn:
                return self._end(started, await asyncio.to_thread(self._run_sync, request))
        try:
            keys_before = set(self.cache.keys())
            request_id = f"{self.worker_id}-{next(self._request_ids)}"
            with job_deadline(request.deadline_unix_s):
                outcome = await self.text.run(args, request_id)
            self._note_loaded(task_model(args), keys_before)
            return self._end(started, self._done(request, outcome.files, outcome.result))
        except Exception as exc:
            return self._end(started, self._failed(request, exc))
