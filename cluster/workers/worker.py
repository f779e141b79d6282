"""The GPU worker: a Ray actor that keeps models warm and runs tasks through the engines, on one GPU (or
virtual GPU on the CPU rig), several GPUs of one node (a ``kx`` card model), or a replica's share of one.

``WorkerBase`` holds what every worker does (start-up checks, engines, and one ``run_job``: the deadline,
the counters, the reply); a worker kind says only how it executes parsed arguments (``_execute``).
``GpuWorker`` runs one task at a time on its engines (the replicas mode: several such actors share a GPU);
``BatchedGpuWorker`` (cluster.workers.batched) runs concurrent GPT tasks through vLLM's async engine.
The classes are plain Python (tests run them in-process); ``GpuWorkerActor`` is the Ray actor the pool
starts.

Jobs come in as ``JobRequest`` and go back as ``JobReply`` (cluster.workers.messages). Nothing the engines
raise crosses the actor boundary as an exception: a task's failure comes back inside the reply as the
taxonomy's error, and anything unexpected is logged with its traceback and sent back as an
``ExecutionError`` (retried elsewhere by the pool). A crash of the process itself reaches the pool as
``RayActorError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Hashable
from typing import Any

import ray
import torch

from cluster import envs
from cluster.config import EngineConfig, RigConfig
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import ExecutionError, OutOfMemory, TaskExecutionError
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.task import TaskArgs
from cluster.workers.engines.base import ImageResult, TextResult
from cluster.workers.engines.deadline import job_deadline
from cluster.workers.engines.determinism import enable_deterministic_mode, enable_vllm_batch_invariance
from cluster.workers.gpu import GpuDiscoveryError, assigned_gpu_specs, nvml_usage
from cluster.workers.messages import JobReply, JobRequest, WorkerInfo
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

logger = logging.getLogger(__name__)
GIB = 1024**3


def is_hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_budget_bytes(rig: RigConfig, card: CardModel, num_replicas: int = 1) -> int:
    """``rig.vram_budget_fraction`` of the worker's GPU memory (all of its GPUs, or its replica's share of
    one); on CPU/MPS, of the worker's card model's VRAM (already summed or split) in RAM."""
    if rig.device == "cuda":
        # Ray shows a worker only its own GPUs (CUDA_VISIBLE_DEVICES): all of them are its memory.
        devices = range(torch.cuda.device_count())
        total_bytes = sum(torch.cuda.get_device_properties(i).total_memory for i in devices) // num_replicas
    else:
        total_bytes = card.vram_gb * GIB
    return int(total_bytes * rig.vram_budget_fraction)


def _quiet_progress_bars() -> None:
    # A worker's output is a log: per-load progress bars from the hub and the model loaders are noise.
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()


class WorkerBase:
    """Start-up and replies shared by both workers; placement (``num_gpus``, card resource) is the pool's."""

    def __init__(
        self,
        card: CardModel,
        index: int,
        worker_id: str,
        rig: RigConfig,
        engine: EngineConfig,
        *,
        num_gpus: int = 1,  # GPUs this worker owns (its card model is "<num_gpus>x <name>")
        num_replicas: int = 1,  # workers sharing its one GPU: each gets that share of the memory
        gpu: CardModel | None = None,  # the card model of each of its GPUs; None: ``card``
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        _quiet_progress_bars()
        # NOTE: both must precede CUDA's start in this process: CUDA reads its device order and cuBLAS its
        # workspace config once. Importing torch does not start CUDA; the first device query does.
        if rig.device == "cuda":
            os.environ[envs.CUDA_DEVICE_ORDER.name] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does
        if engine.deterministic:
            enable_deterministic_mode()
        if engine.text == "vllm":
            enable_vllm_batch_invariance()
        self.card = card
        self.gpu = gpu or card
        self.num_gpus = num_gpus
        self.num_replicas = num_replicas
        self.index = index
        self._gpu_indices: list[int] = []  # the NVML indices of this worker's GPUs (none on a CPU rig)
        self.worker_id = worker_id
        if rig.device == "cuda" and rig.discover_gpus:
            self._check_assigned_gpu()
        store = ModelStore(rig.model_cache_dir, is_offline=is_hub_offline())
        self.cache = ModelCache(cache_budget_bytes(rig, card, num_replicas))
        self.text, self.image = self._engines(engine, rig, store)
        self._check_runtime(engine, rig)
        if rig.prefetch_models:
            store.prefetch(rig.prefetch_models)
        self._lock = threading.Lock()
        self._num_running = 0
        self._num_jobs = 0
        self._cache_keys_by_model: dict[str, set[Hashable]] = {}
        logger.info(
            "[worker] ready worker=%s card=%s device=%s budget_bytes=%d",
            worker_id, card.short_id, rig.device, self.cache.budget_bytes,
        )  # fmt: skip

    def _engines(self, engine: EngineConfig, rig: RigConfig, store: ModelStore) -> tuple[Any, Any]:
        from cluster.workers.engines import make_text_engine
        from cluster.workers.engines.image_diffusers import DiffusersImageEngine

        # One cache for both engines: warm text and image models share (and compete for) one budget.
        text = make_text_engine(
            engine.text, store, self.cache, rig.device,
            num_gpus=self.num_gpus, memory_fraction=rig.vram_budget_fraction / self.num_replicas,
        )  # fmt: skip
        return text, DiffusersImageEngine(store, self.cache, rig.device)

    def _check_assigned_gpu(self) -> None:
        specs = assigned_gpu_specs(self.num_gpus)
        self._gpu_indices = [spec.index for spec in specs]
        for spec in specs:
            if (spec.name, spec.vram_gb) != (self.gpu.gpu_name, self.gpu.vram_gb):
                raise GpuDiscoveryError(
                    f"worker {self.worker_id} was placed for {self.gpu.gpu_name!r} ({self.gpu.vram_gb} GB) "
                    f"but got GPU {spec.index}, a {spec.name!r} ({spec.vram_gb} GB): keep one card model per "
                    "Ray node"
                )

    def _check_runtime(self, engine: EngineConfig, rig: RigConfig) -> None:
        runtime = engine.runtime_tag or self.text.runtime_tag()
        declared = {group.runtime_tag for group in rig.virtual_gpus
                    if not rig.discover_gpus and group.card_name == self.gpu.gpu_name}  # fmt: skip
        if self.gpu.runtime in declared:  # a virtual GPU on a simulated software version: the rig says so
            return
        if runtime != self.gpu.runtime:
            # The pool computed the card model elsewhere (another node's software): GPT results could differ.
            raise GpuDiscoveryError(
                f"worker {self.worker_id} runs {runtime!r} but its card model says {self.gpu.runtime!r}; "
                f"install the same engine versions on every node, or set engine.runtime_tag"
            )

    # --- jobs ---

    async def run_job(self, request: JobRequest) -> JobReply:
        """The job's files and result, or its error; with the models warm in this worker afterwards."""
        with self._lock:
            self._num_running += 1
        started = time.perf_counter()
        try:
            keys_before = set(self.cache.keys())
            with job_deadline(request.deadline_unix_s):  # asyncio.to_thread carries it into the engine
                outcome = await self._execute(request.args)
            self._note_loaded(request.model, keys_before)
            logger.info("[worker] job done worker=%s job=%s", self.worker_id, request.name)
            files, result, error = tuple(outcome.files), outcome.result, None
        except Exception as exc:
            files, result, error = (), b"", self._failed(request, exc)
        with self._lock:
            self._num_running -= 1
            self._num_jobs += 1
        engine_s = time.perf_counter() - started
        return JobReply(self.worker_id, files, result, error, frozenset(self.loaded_models()), engine_s)

    async def _execute(self, args: TaskArgs) -> TextResult | ImageResult:
        """Run the task on this worker's engines: each kind of worker says how."""
        raise NotImplementedError

    def _engine_for(self, args: TaskArgs) -> Any:
        return self.text if isinstance(args, GPTTaskArgs) else self.image

    def _failed(self, request: JobRequest, exc: Exception) -> TaskExecutionError:
        if isinstance(exc, TaskExecutionError):
            logger.warning(
                "[worker] job failed worker=%s job=%s code=%s: %s",
                self.worker_id, request.name, exc.code.value, exc,
            )  # fmt: skip
            if isinstance(exc, OutOfMemory):
                self.cache.clear()  # the retry, here or on a sibling, starts from free memory
            return exc
        logger.exception("[worker] job crashed worker=%s job=%s", self.worker_id, request.name)
        return ExecutionError(f"worker {self.worker_id}: {type(exc).__name__}: {exc}")

    def _note_loaded(self, model_id: str, keys_before: set[Hashable]) -> None:
        # NOTE: with several places per GPU a load by a concurrent job may be credited to this model too;
        # loaded_models is a scheduling hint, so a rare wrong credit costs one cold load, nothing more.
        new_keys = set(self.cache.keys()) - keys_before
        if new_keys:
            self._cache_keys_by_model.setdefault(model_id, set()).update(new_keys)

    # --- state the pool reads ---

    def loaded_models(self) -> list[str]:
        """Model ids (as tasks name them) whose weights are warm in this worker's cache now."""
        return sorted(
            model_id
            for model_id, keys in self._cache_keys_by_model.items()
            if any(key in self.cache for key in keys)
        )

    def info(self) -> WorkerInfo:
        usage = nvml_usage(self._gpu_indices[0]) if self._gpu_indices else {}
        return WorkerInfo(
            worker_id=self.worker_id,
            index=self.index,
            card=self.card,
            num_running=self._num_running,
            num_jobs=self._num_jobs,
            pid=os.getpid(),
            num_torch_threads=torch.get_num_threads(),
            node_id=ray.get_runtime_context().get_node_id(),
            gpu_utilization=usage.get("gpu_utilization"),
            gpu_memory_used_bytes=usage.get("gpu_memory_used_bytes"),
            cache_used_bytes=self.cache.num_bytes,
            cache_budget_bytes=self.cache.budget_bytes,
        )


class GpuWorker(WorkerBase):
    """Runs one task at a time: the replicas mode puts ``rig.places_per_gpu`` of these on one GPU."""

    async def _execute(self, args: TaskArgs) -> TextResult | ImageResult:
        # In a thread: the actor's loop keeps answering ``info`` and ``loaded_models`` meanwhile.
        return await asyncio.to_thread(self._engine_for(args).run, args)


GpuWorkerActor = ray.remote(GpuWorker)
