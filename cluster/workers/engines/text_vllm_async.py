"""GPT tasks on vLLM's async engine (``AsyncLLMEngine``, vLLM v1's ``AsyncLLM``): the batched mode.

Each task is one request, ``generate(prompt, sampling_params, request_id)``, that its job awaits alone;
vLLM's scheduler batches the requests that are in flight at once (continuous batching). Batch
invariance (``VLLM_BATCH_INVARIANT=1``, set before the import) keeps a request's numerics independent of
its batch, and ``SamplingParams.seed`` gives it its own random stream, so a task's bytes do not depend on
what else runs. A request that fails raises in its own job only. Prompts and responses go through the
same code as the offline vLLM engine (``text_vllm``).
UNVERIFIED on a GPU: exercised only against the stand-in in ``tests/standins/vllm``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cluster.protocol.gpt import GPTTaskArgs
from cluster.workers.engines.base import TextResult
from cluster.workers.engines.deadline import JobPastDeadline, past_deadline
from cluster.workers.engines.determinism import enable_vllm_batch_invariance
from cluster.workers.engines.errors import loading, running
from cluster.workers.engines.text_request import (
    build_prompt_ids,
    check_context,
    merge_generation_config,
)
from cluster.workers.engines.text_vllm import (
    LoadedVllmModel,
    checkpoint_companions,
    checkpoint_nbytes,
    engine_options,
    response_from_request_output,
    sampling_params_kwargs,
)
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

logger = logging.getLogger(__name__)


def import_async_vllm() -> Any:
    """The parts of vLLM's async API this engine uses; batch invariance goes on before the import."""
    enable_vllm_batch_invariance()
    import vllm
    from vllm.inputs import TokensPrompt

    return SimpleNamespace(
        AsyncLLMEngine=vllm.AsyncLLMEngine,
        AsyncEngineArgs=vllm.AsyncEngineArgs,
        SamplingParams=vllm.SamplingParams,
        TokensPrompt=TokensPrompt,
        version=vllm.__version__,
    )


class AsyncVllmTextEngine:
    """One async engine per model (kept in the worker's cache); ``run`` is one task's request."""

    name = "vllm"

    def __init__(
        self,
        store: ModelStore,
        cache: ModelCache,
        *,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        vllm_api: Any = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.gpu_memory_utilization = gpu_memory_utilization
        self.tensor_parallel_size = tensor_parallel_size
        self._api = vllm_api

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = import_async_vllm()
        return self._api

    def runtime_tag(self) -> str:
        # The same tag as the offline engine: the same batch-invariant numerics on one card model.
        return f"vllm-{self.api.version}-batch-invariant"

    def _load(self, path: Path, args: GPTTaskArgs) -> LoadedVllmModel:
        from transformers import AutoConfig

        with loading(args.model):
            options = engine_options(path, args, self.gpu_memory_utilization, self.tensor_parallel_size)
            llm = self.api.AsyncLLMEngine.from_engine_args(self.api.AsyncEngineArgs(**options))
            tokenizer, eos_ids, defaults = checkpoint_companions(path)
            max_context = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
            return LoadedVllmModel(
                llm, tokenizer, eos_ids, defaults, checkpoint_nbytes(path), max_context=max_context
            )

    def _model(self, args: GPTTaskArgs) -> LoadedVllmModel:
        path = self.store.resolve(args.model)
        key = ("vllm-async", str(path), args.dtype, args.quantize_bits)
        return self.cache.get_or_load(key, lambda: self._load(path, args))

    async def run(self, args: GPTTaskArgs, request_id: str) -> TextResult:
        """One task as one request; raises the taxonomy's error for this task only."""
        # Loading blocks for seconds: in a thread, so the requests already in flight keep streaming.
        loaded = await asyncio.to_thread(self._model, args)
        params = merge_generation_config(loaded.generation_defaults, args.generation_config)
        sampling = self.api.SamplingParams(**sampling_params_kwargs(params, args.seed))
        prompt_ids = build_prompt_ids(loaded.tokenizer, args)
        check_context(prompt_ids, loaded.max_context)
        prompt = self.api.TokensPrompt(prompt_token_ids=prompt_ids)
        final, is_finished = None, False
        try:
            with running():
                async for output in loaded.llm.generate(prompt, sampling, request_id):
                    final, is_finished = output, output.finished
                    if past_deadline():
                        raise JobPastDeadline("the job passed its deadline while it ran: stopped")
        finally:
            if not is_finished:  # deadline, cancellation or error: free its place in vLLM's batch
                await loaded.llm.abort(request_id)
        if final is None:
            raise JobPastDeadline("vLLM returned no output for the request")
        return response_from_request_output(final, args.model, len(prompt_ids), loaded, params)
