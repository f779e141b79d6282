"""The text engine for GPU farms on vLLM, in batch-invariant mode with a seed per request.

vLLM is imported lazily (it pins its own CUDA torch and is not installed in CI). Batch invariance
(``VLLM_BATCH_INVARIANT=1``, set before the import) makes a request's numerics independent of the batch
it shares, so tasks batched together give the same bytes as tasks run alone; ``SamplingParams.seed``
gives each request its own random stream. Prompts go in as token ids built by the shared request code,
and text comes out through the shared decoding, so both engines read a task the same way.

``VllmEngineBase`` is what both vLLM engines share: loading (the model, its tokenizer, generation
defaults and context length), the runtime tag, and a task turned into a request (``_prepare``: sampling
parameters, prompt ids, the context check). ``VllmTextEngine`` is the offline engine: it drives vLLM's
``LLMEngine`` step by step (``add_request``, ``step``, ``abort_request``), as ``LLM.generate`` does inside,
so that it can stop at the job's deadline between steps. The async engine is in ``text_vllm_async``.
UNVERIFIED: this module has only been exercised on the CPU against stand-ins of vLLM's classes.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cluster.protocol.errors import ArgumentsInvalid, ModelInvalid, TaskExecutionError
from cluster.protocol.gpt import GPTTaskArgs
from cluster.workers.engines.base import TextEngine, TextResult
from cluster.workers.engines.deadline import JobPastDeadline, past_deadline
from cluster.workers.engines.determinism import enable_vllm_batch_invariance
from cluster.workers.engines.errors import loading, running
from cluster.workers.engines.text_request import (
    GenerationParams,
    build_prompt_ids,
    build_response,
    check_context,
    finish_sequence,
    merge_generation_config,
    model_generation_defaults,
)
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

logger = logging.getLogger(__name__)


def engine_options(
    path: Path, args: GPTTaskArgs, gpu_memory_utilization: float, tensor_parallel_size: int
) -> dict[str, Any]:
    """What both vLLM engines (the offline LLM, the async engine) load a model with."""
    if args.quantize_bits == 8:
        raise ModelInvalid("quantize_bits=8: the vLLM engine quantizes in flight to 4 bits only")
    return {
        "model": str(path),
        "tokenizer": str(path),
        "dtype": args.dtype,
        "seed": 0,
        "quantization": "bitsandbytes" if args.quantize_bits == 4 else None,
        "gpu_memory_utilization": gpu_memory_utilization,
        "tensor_parallel_size": tensor_parallel_size,
    }


def import_vllm() -> Any:
    """The parts of vLLM both engines use; batch invariance is switched on before the first import."""
    enable_vllm_batch_invariance()
    import vllm
    from vllm.inputs import TokensPrompt

    return SimpleNamespace(
        LLM=vllm.LLM,
        AsyncLLMEngine=vllm.AsyncLLMEngine,
        AsyncEngineArgs=vllm.AsyncEngineArgs,
        SamplingParams=vllm.SamplingParams,
        TokensPrompt=TokensPrompt,
        version=vllm.__version__,
    )


def sampling_params_kwargs(params: GenerationParams, seed: int) -> dict[str, Any]:
    """Task parameters as ``vllm.SamplingParams`` keyword arguments, with transformers' meaning kept."""
    if params.num_beams > 1:
        raise ArgumentsInvalid(
            "num_beams > 1 (beam search) is not served by the vLLM engine", ("generation_config.num_beams",)
        )
    if params.typical_p != 1.0:
        raise ArgumentsInvalid("typical_p is not served by the vLLM engine", ("generation_config.typical_p",))
    return {
        "n": params.num_return_sequences,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature if params.do_sample else 0.0,  # 0.0 is vLLM's greedy decoding
        "top_k": params.top_k if params.top_k > 0 else -1,  # transformers' 0 and vLLM's -1 both disable it
        "top_p": params.top_p,
        "min_p": params.min_p or 0.0,
        "repetition_penalty": params.repetition_penalty,
        "stop": list(params.stop_strings) or None,
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "seed": seed,
    }


@dataclass(frozen=True, slots=True)
class LoadedVllmModel:
    llm: Any  # ``vllm.LLM`` (offline) or ``vllm.AsyncLLMEngine``
    tokenizer: Any
    eos_token_ids: frozenset[int]
    generation_defaults: dict[str, Any]
    num_bytes_hint: int  # vLLM owns its memory; the cache budgets it by the checkpoint's size
    max_context: int | None  # the model's max_position_embeddings: longer prompts are refused early


@dataclass(frozen=True, slots=True)
class VllmRequest:
    """One task made ready for vLLM: what goes in, and what reading its output needs."""

    loaded: LoadedVllmModel
    prompt_ids: list[int]
    params: GenerationParams
    sampling: Any  # ``vllm.SamplingParams``


def checkpoint_nbytes(path: Path) -> int:
    files = [*path.glob("*.safetensors"), *path.glob("*.bin")] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files)


def response_from_request_output(output: Any, model: str, request: VllmRequest) -> TextResult:
    """0.json from a ``vllm.RequestOutput`` (``outputs[i].index``, ``.token_ids``, ``.finish_reason``)."""
    loaded, params = request.loaded, request.params
    tokenizer = loaded.tokenizer

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode(list(ids), skip_special_tokens=True)

    sequences = []
    for completion in sorted(output.outputs, key=lambda c: c.index):
        sequence = finish_sequence(
            list(completion.token_ids), decode, loaded.eos_token_ids, params.stop_strings
        )
        if sequence.finish_reason == "length" and completion.finish_reason == "stop":
            # vLLM may stop on a token it does not append (a stop token id): trust its reason.
            sequence = type(sequence)(sequence.text, sequence.num_tokens, "stop")
        sequences.append(sequence)
    return TextResult(build_response(model, len(request.prompt_ids), sequences))


class VllmEngineBase:
    """Loading and request building for both vLLM engines; each says how it starts vLLM (``_start``)."""

    name = "vllm"
    cache_tag = "vllm"  # the engines' models are different objects: their cache keys differ

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
            self._api = import_vllm()
        return self._api

    def runtime_tag(self) -> str:
        # Both engines: the same batch-invariant numerics on one card model.
        return f"vllm-{self.api.version}-batch-invariant"

    def _start(self, options: dict[str, Any]) -> Any:
        """vLLM's engine object for a model loaded with ``options``."""
        raise NotImplementedError

    def _load(self, path: Path, args: GPTTaskArgs) -> LoadedVllmModel:
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        with loading(args.model):
            llm = self._start(
                engine_options(path, args, self.gpu_memory_utilization, self.tensor_parallel_size)
            )
            tokenizer = AutoTokenizer.from_pretrained(path)
            try:
                generation = GenerationConfig.from_pretrained(path).to_dict()
            except OSError:  # a checkpoint without generation_config.json
                generation = {}
            eos = generation.get("eos_token_id", tokenizer.eos_token_id)
            eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
            max_context = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
            return LoadedVllmModel(
                llm, tokenizer, eos_ids, model_generation_defaults(generation), checkpoint_nbytes(path),
                max_context,
            )  # fmt: skip

    def _model(self, args: GPTTaskArgs) -> LoadedVllmModel:
        path = self.store.resolve(args.model)
        key = (self.cache_tag, str(path), args.dtype, args.quantize_bits)
        return self.cache.get_or_load(key, lambda: self._load(path, args))

    def _prepare(self, args: GPTTaskArgs) -> VllmRequest:
        """The task as a vLLM request; a task vLLM cannot serve, or whose prompt the model's context cannot
        hold, is refused here (``ArgumentsInvalid``), before it takes a place in a batch."""
        loaded = self._model(args)
        params = merge_generation_config(loaded.generation_defaults, args.generation_config)
        sampling = self.api.SamplingParams(**sampling_params_kwargs(params, args.seed))
        prompt_ids = build_prompt_ids(loaded.tokenizer, args)
        check_context(prompt_ids, loaded.max_context)
        return VllmRequest(loaded, prompt_ids, params, sampling)

    def _prompt(self, request: VllmRequest) -> Any:
        return self.api.TokensPrompt(prompt_token_ids=request.prompt_ids)


class VllmTextEngine(VllmEngineBase, TextEngine):
    """The offline engine: a worker's tasks run through ``vllm.LLM``'s engine, stepped until every request
    finished or the job's deadline passed."""

    def __init__(self, store: ModelStore, cache: ModelCache, **kwargs: Any) -> None:
        super().__init__(store, cache, **kwargs)
        self._lock = threading.Lock()  # one stepping loop per engine at a time
        self._request_ids = itertools.count()

    def _start(self, options: dict[str, Any]) -> Any:
        return self.api.LLM(**options)

    def run(self, args: GPTTaskArgs) -> TextResult:
        result = self.run_many([args])[0]
        if isinstance(result, TaskExecutionError):
            raise result
        return result

    def run_many(self, tasks: Sequence[GPTTaskArgs]) -> list[TextResult | TaskExecutionError]:
        """Tasks on the same model share vLLM's batches; each fails on its own."""
        results: list[TextResult | TaskExecutionError | None] = [None] * len(tasks)
        groups: dict[int, list[tuple[int, VllmRequest]]] = {}
        for i, args in enumerate(tasks):
            try:
                request = self._prepare(args)
            except TaskExecutionError as exc:
                results[i] = exc
                continue
            groups.setdefault(id(request.loaded), []).append((i, request))
        for members in groups.values():
            self._generate_group(tasks, members, results)
        return [r for r in results if r is not None]

    def _generate_group(
        self,
        tasks: Sequence[GPTTaskArgs],
        members: list[tuple[int, VllmRequest]],
        results: list[TextResult | TaskExecutionError | None],
    ) -> None:
        """One model's requests, added together and stepped to the end: what ``LLM.generate`` does, with
        the deadline checked between steps (a stopped job's requests are aborted, freeing the batch)."""
        engine = members[0][1].loaded.llm.llm_engine
        with self._lock:
            ids = {f"offline-{next(self._request_ids)}": (i, request) for i, request in members}
            finals: dict[str, Any] = {}
            try:
                with running():
                    for request_id, (_, request) in ids.items():
                        engine.add_request(request_id, self._prompt(request), request.sampling)
                    while engine.has_unfinished_requests():
                        if past_deadline():
                            raise JobPastDeadline("the job passed its deadline while it ran: stopped")
                        for output in engine.step():
                            if output.finished:
                                finals[output.request_id] = output
            except TaskExecutionError as exc:
                engine.abort_request([r for r in ids if r not in finals])
                for i, _ in members:
                    results[i] = exc
                return
        for request_id, (i, request) in ids.items():
            results[i] = response_from_request_output(finals[request_id], tasks[i].model, request)
