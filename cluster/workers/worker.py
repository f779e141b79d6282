"""The GPU worker: one Ray actor per GPU (or per virtual GPU on the CPU rig) that keeps models warm and
runs tasks through the engines.

Jobs come in as ``JobRequest`` and go back as ``JobReply`` (cluster.workers.messages). Nothing the engines
raise crosses the actor boundary as an exception: a task's failure comes back inside the reply as the
taxonomy's error, and anything unexpected is logged with its traceback and sent back as an
``ExecutionError`` (retried elsewhere by the pool). A crash of the process itself reaches the pool as
``RayActorError``.
"""

from __future__ import annotations

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
from cluster.protocol.task import parse_task_args, task_model
from cluster.test_hooks import corrupt_result
from cluster.workers.engines.deadline import job_deadline
from cluster.workers.engines.determinism import enable_deterministic_mode, enable_vllm_batch_invariance
from cluster.workers.gpu import GpuDiscoveryError, assigned_gpu_spec, nvml_usage
from cluster.workers.messages import JobReply, JobRequest, WorkerInfo
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

logger = logging.getLogger(__name__)
GIB = 1024**3


def is_hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_budget_bytes(rig: RigConfig, card: CardModel) -> int:
    """``rig.vram_budget_fraction`` of the GPU's memory; on CPU/MPS, of the (virtual) card's VRAM in RAM."""
    if rig.device == "cuda":
        total_bytes = torch.cuda.get_device_properties(0).total_memory
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


@ray.remote
class GpuWorker:
    """Runs tasks of one card model on one GPU. Placement (``num_gpus``, the card resource) is the pool's."""

    def __init__(
        self,
        card: CardModel,
        index: int,
        worker_id: str,
        rig: RigConfig,
        engine: EngineConfig,
        *,
        corrupt_results: bool = False,  # a test fault (TestHooks.corrupt_workers): wrong results
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
        self.index = index
        self._gpu_index: int | None = None  # the NVML index of this worker's GPU (None on a CPU rig)
        self.worker_id = worker_id
        self.corrupt_results = corrupt_results
        if rig.device == "cuda" and rig.discover_gpus:
            self._check_assigned_gpu()
        store = ModelStore(rig.model_cache_dir, is_offline=is_hub_offline())
        self.cache = ModelCache(cache_budget_bytes(rig, card))
        self.text, self.image = self._engines(engine, rig.device, store)
        self._check_runtime(engine)
        if rig.prefetch_models:
            store.prefetch(rig.prefetch_models)
        self._lock = threading.Lock()
        self._num_running = 0
        self._num_jobs = 0
        self._cache_keys_by_model: dict[str, set[Hashable]] = {}
        logger.info(
            "[worker] ready worker=%s card=%s device=%s budget_bytes=%d corrupt_results=%s",
            worker_id,
            card.short_id,
            rig.device,
            self.cache.budget_bytes,
            corrupt_results,
        )

    def _engines(self, engine: EngineConfig, device: str, store: ModelStore) -> tuple[Any, Any]:
        from cluster.workers.engines import make_text_engine
        from cluster.workers.engines.image_diffusers import DiffusersImageEngine

        # One cache for both engines: warm text and image models share (and compete for) one budget.
        text = make_text_engine(engine.text, store, self.cache, device)
        return text, DiffusersImageEngine(store, self.cache, device)

    def _check_assigned_gpu(self) -> None:
        spec = assigned_gpu_spec()
        self._gpu_index = spec.index
        if (spec.name, spec.vram_gb) != (self.card.gpu_name, self.card.vram_gb):
            raise GpuDiscoveryError(
                f"worker {self.worker_id} was placed for {self.card.gpu_name!r} ({self.card.vram_gb} GB) but "
                f"got GPU {spec.index}, a {spec.name!r} ({spec.vram_gb} GB): keep one card model per Ray node"
            )

    def _check_runtime(self, engine: EngineConfig) -> None:
        runtime = engine.runtime_tag or self.text.runtime_tag()
        if runtime != self.card.runtime:
            # The pool computed the card model elsewhere (another node's software): GPT results could differ.
            raise GpuDiscoveryError(
                f"worker {self.worker_id} runs {runtime!r} but its card model says {self.card.runtime!r}; "
                f"install the same engine versions on every node, or set engine.runtime_tag"
            )

    # --- jobs ---

    def run_job(self, request: JobRequest) -> JobReply:
        """The job's files and result, or its error; with the models warm in this worker afterwards."""
        with self._lock:
            self._num_running += 1
        started = time.perf_counter()
        try:
            files, result, error = self._run(request)
            engine_s = time.perf_counter() - started
            return JobReply(files, result, error, frozenset(self.loaded_models()), engine_s)
        finally:
            with self._lock:
                self._num_running -= 1
                self._num_jobs += 1

    def _run(self, request: JobRequest) -> tuple[tuple[bytes, ...], bytes, TaskExecutionError | None]:
        try:
            args = parse_task_args(request.task_type, request.args_json)
            engine = self.text if isinstance(args, GPTTaskArgs) else self.image
            keys_before = set(self.cache.keys())
            with job_deadline(request.deadline_unix_s):
                outcome = engine.run(args)
            self._note_loaded(task_model(args), keys_before)
            files, result = outcome.files, outcome.result
            if self.corrupt_results:
                files, result = corrupt_result(request.task_type, files)
            logger.info("[worker] job done worker=%s task_type=%d", self.worker_id, request.task_type)
            return tuple(files), result, None
        except TaskExecutionError as exc:
            logger.warning("[worker] job failed worker=%s code=%s: %s", self.worker_id, exc.code.value, exc)
            if isinstance(exc, OutOfMemory):
                self.cache.clear()  # the retry, here or on a sibling, starts from free memory
            return (), b"", exc
        except Exception as exc:
            logger.exception("[worker] job crashed worker=%s task_type=%d", self.worker_id, request.task_type)
            return (), b"", ExecutionError(f"worker {self.worker_id}: {type(exc).__name__}: {exc}")

    def _note_loaded(self, model_id: str, keys_before: set[Hashable]) -> None:
        # NOTE: with several slots per GPU a load by a concurrent job may be credited to this model too;
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
        usage = nvml_usage(self._gpu_index) if self._gpu_index is not None else {}
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
        )
