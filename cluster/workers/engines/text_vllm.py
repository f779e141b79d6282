"""The text engine for GPU farms on vLLM, in batch-invariant mode with a seed per request.

vLLM is imported lazily (it pins its own CUDA torch and is not installed in CI). Batch invariance
(``VLLM_BATCH_INVARIANT=1``, set before the import) makes a request's numerics independent of the batch
it shares, so tasks batched together give the same bytes as tasks run alone; ``SamplingParams.seed``
gives each request its own random stream. Prompts go in as token ids built by the shared request code,
and text comes out through the shared decoding, so both engines read a task the same way.
UNVERIFIED: this module has only been exercised on the CPU against stand-ins of vLLM's classes.
"""

from __future__ import annotations

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
from cluster.workers.engines.determinism import enable_vllm_batch_invariance
from cluster.workers.engines.errors import loading, running
from cluster.workers.engines.text_request import (
    GenerationParams,
    build_prompt_ids,
    build_response,
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


def checkpoint_companions(path: Path) -> tuple[Any, frozenset[int], dict[str, Any]]:
    """The checkpoint's tokenizer, end-of-sequence ids and generation defaults, beside the vLLM engine."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        generation = GenerationConfig.from_pretrained(path).to_dict()
    except OSError:  # a checkpoint without generation_config.json
        generation = {}
    eos = generation.get("eos_token_id", tokenizer.eos_token_id)
    eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    return tokenizer, eos_ids, model_generation_defaults(generation)


def import_vllm() -> Any:
    """The parts of vLLM this engine uses; batch invariance is switched on before the first import."""
    enable_vllm_batch_invariance()
    import vllm
    from vllm.inputs import TokensPrompt

    return SimpleNamespace(
        LLM=vllm.LLM, SamplingParams=vllm.SamplingParams, TokensPrompt=TokensPrompt, version=vllm.__version__
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
    llm: Any
    tokenizer: Any
    eos_token_ids: frozenset[int]
    generation_defaults: dict[str, Any]
    num_bytes_hint: int  # vLLM owns its memory; the cache budgets it by the checkpoint's size
    max_context: int | None = None  # the model's max_position_embeddings: longer prompts are refused early


def checkpoint_nbytes(path: Path) -> int:
    files = [*path.glob("*.safetensors"), *path.glob("*.bin")] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files)


def response_from_request_output(
    output: Any, model: str, num_prompt_tokens: int, loaded: LoadedVllmModel, params: GenerationParams
) -> TextResult:
    """0.json from a ``vllm.RequestOutput`` (``outputs[i].index``, ``.token_ids``, ``.finish_reason``)."""
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
    return TextResult(build_response(model, num_prompt_tokens, sequences))


class VllmTextEngine(TextEngine):
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
        self._lock = threading.Lock()

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = import_vllm()
        return self._api

    def runtime_tag(self) -> str:
        return f"vllm-{self.api.version}-batch-invariant"

    def _load(self, path: Path, args: GPTTaskArgs) -> LoadedVllmModel:
        with loading(args.model):
            options = engine_options(path, args, self.gpu_memory_utilization, self.tensor_parallel_size)
            llm = self.api.LLM(**options)
            tokenizer, eos_ids, defaults = checkpoint_companions(path)
            return LoadedVllmModel(llm, tokenizer, eos_ids, defaults, checkpoint_nbytes(path))

    def _model(self, args: GPTTaskArgs) -> LoadedVllmModel:
        path = self.store.resolve(args.model)
        key = ("vllm", str(path), args.dtype, args.quantize_bits)
        return self.cache.get_or_load(key, lambda: self._load(path, args))

    def run(self, args: GPTTaskArgs) -> TextResult:
        result = self.run_many([args])[0]
        if isinstance(result, TaskExecutionError):
            raise result
        return result

    def run_many(self, tasks: Sequence[GPTTaskArgs]) -> list[TextResult | TaskExecutionError]:
        """Tasks on the same model go to vLLM in one ``generate`` call; each fails on its own."""
        results: list[TextResult | TaskExecutionError | None] = [None] * len(tasks)
        groups: dict[int, list[tuple[int, list[int], GenerationParams]]] = {}
        models: dict[int, LoadedVllmModel] = {}
        for i, args in enumerate(tasks):
            try:
                loaded = self._model(args)
                params = merge_generation_config(loaded.generation_defaults, args.generation_config)
                sampling_params_kwargs(params, args.seed)  # reject what vLLM cannot serve before batching
                prompt_ids = build_prompt_ids(loaded.tokenizer, args)
            except TaskExecutionError as exc:
                results[i] = exc
                continue
            models[id(loaded)] = loaded
            groups.setdefault(id(loaded), []).append((i, prompt_ids, params))
        for key, members in groups.items():
            self._generate_group(models[key], tasks, members, results)
        return [r for r in results if r is not None]

    def _generate_group(
        self,
        loaded: LoadedVllmModel,
        tasks: Sequence[GPTTaskArgs],
        members: list[tuple[int, list[int], GenerationParams]],
        results: list[TextResult | TaskExecutionError | None],
    ) -> None:
        api = self.api
        prompts = [api.TokensPrompt(prompt_token_ids=ids) for _, ids, _ in members]
        sampling = [api.SamplingParams(**sampling_params_kwargs(p, tasks[i].seed)) for i, _, p in members]
        try:
            with self._lock, running():
                outputs = loaded.llm.generate(prompts, sampling, use_tqdm=False)
        except TaskExecutionError as exc:
            for i, _, _ in members:
                results[i] = exc
            return
        for (i, ids, params), output in zip(members, outputs, strict=True):
            results[i] = response_from_request_output(output, tasks[i].model, len(ids), loaded, params)
