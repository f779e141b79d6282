"""The reference text engine on transformers (CPU, CUDA, MPS).

Determinism: ``generate`` samples from torch's global generator and accepts none of its own, so each
task reseeds it right before generating while holding the engine's lock. A task therefore sees the same
random stream whether it runs alone or between other tasks, and two tasks never interleave on one engine.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cluster.protocol.errors import ModelInvalid
from cluster.protocol.gpt import Dtype, GPTTaskArgs
from cluster.workers.engines.base import TextEngine, TextResult
from cluster.workers.engines.deadline import check_deadline, past_deadline
from cluster.workers.engines.determinism import seed_task
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

TORCH_DTYPES: dict[str, torch.dtype | str] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "auto": "auto",
}


# The sampling knobs at the values that mean "off" to transformers (None would be filled from the model's).
GREEDY_NEUTRAL = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "min_p": None,
                  "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoadedTextModel:
    model: Any
    tokenizer: Any
    eos_token_ids: frozenset[int]
    generation_defaults: dict[str, Any]


def quantization_config(bits: int | None, device: str) -> Any:
    """A bitsandbytes config for ``bits``; ModelInvalid where this node cannot quantize."""
    if bits is None:
        return None
    if not device.startswith("cuda"):
        raise ModelInvalid(
            f"quantize_bits={bits} needs bitsandbytes on a CUDA device; this node runs on {device}"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelInvalid(
            f"quantize_bits={bits} needs bitsandbytes, which this node lacks (install helium-cluster[quant])"
        ) from exc
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def eos_ids_of(generation_config: Any, tokenizer: Any) -> frozenset[int]:
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return frozenset(int(i) for i in ids)


def load_text_model(
    path: Path, model_id: str, dtype: Dtype, quantize_bits: int | None, device: str, num_gpus: int = 1
) -> LoadedTextModel:
    """Load a causal LM and its tokenizer; every failure becomes ModelInvalid / ModelNotAvailable / OOM.

    On ``num_gpus > 1`` CUDA devices the layers are spread evenly over them (accelerate's "balanced"
    device map: whole layers per GPU, run in turn). UNVERIFIED on GPUs: on the CPU rig a multi-GPU worker
    has one device and loads as one GPU does.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with loading(model_id):
        quantization = quantization_config(quantize_bits, device)
        kwargs: dict[str, Any] = {"dtype": TORCH_DTYPES[dtype]}
        is_sharded = num_gpus > 1 and device.startswith("cuda")
        if is_sharded:
            kwargs["device_map"] = "balanced"
        elif quantization is not None:
            kwargs["device_map"] = device
        if quantization is not None:
            kwargs["quantization_config"] = quantization
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        return LoadedTextModel(
            model=model,
            tokenizer=tokenizer,
            eos_token_ids=eos_ids_of(model.generation_config, tokenizer),
            generation_defaults=model_generation_defaults(model.generation_config.to_dict()),
        )


@functools.cache
def _stop_past_deadline() -> Any:
    """A stopping criterion checked after every generated token: past the job's deadline every sequence
    stops (transformers is imported here, as everywhere in this module, only when a model runs)."""
    from transformers import StoppingCriteria

    class StopPastDeadline(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full(
                (input_ids.shape[0],), past_deadline(), dtype=torch.bool, device=input_ids.device
            )

    return StopPastDeadline()


class TransformersTextEngine(TextEngine):
    name = "transformers"

    def __init__(
        self, store: ModelStore, cache: ModelCache, device: str = "cpu", *, num_gpus: int = 1
    ) -> None:
        self.store = store
        self.cache = cache
        self.device = device
        self.num_gpus = num_gpus
        self._lock = threading.Lock()

    def runtime_tag(self) -> str:
        import transformers

        return f"transformers-{transformers.__version__}-torch-{torch.__version__}"

    def _model(self, args: GPTTaskArgs) -> LoadedTextModel:
        path = self.store.resolve(args.model)
        key = ("causal_lm", str(path), args.dtype, args.quantize_bits, self.device)
        return self.cache.get_or_load(
            key,
            lambda: load_text_model(
                path, args.model, args.dtype, args.quantize_bits, self.device, self.num_gpus
            ),
        )

    def run(self, args: GPTTaskArgs) -> TextResult:
        loaded = self._model(args)
        params = merge_generation_config(loaded.generation_defaults, args.generation_config)
        prompt_ids = build_prompt_ids(loaded.tokenizer, args)
        check_context(prompt_ids, getattr(loaded.model.config, "max_position_embeddings", None))
        rows = self._generate(loaded, prompt_ids, params, args.seed)
        check_deadline()  # generation stopped at the deadline: its text is no result
        tokenizer = loaded.tokenizer

        def decode(ids: Any) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=True)

        sequences = [finish_sequence(row, decode, loaded.eos_token_ids, params.stop_strings) for row in rows]
        return TextResult(build_response(args.model, len(prompt_ids), sequences))

    def _generate(
        self, loaded: LoadedTextModel, prompt_ids: list[int], params: GenerationParams, seed: int
    ) -> list[list[int]]:
        model = loaded.model
        config = copy.deepcopy(model.generation_config)
        values = params.to_hf()
        if not values["do_sample"]:
            # NOTE: greedy decoding ignores the sampling knobs; left at the model's values (most chat models
            # ship top_k/top_p), transformers warns on every greedy task that they "are not valid".
            values.update(GREEDY_NEUTRAL)
        config.update(**values)
        if config.pad_token_id is None and loaded.eos_token_ids:
            config.pad_token_id = min(loaded.eos_token_ids)
        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=model.device)
        from transformers import StoppingCriteriaList

        extra = {"tokenizer": loaded.tokenizer} if params.stop_strings else {}
        with self._lock, running(), torch.inference_mode():
            seed_task(seed)
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_stop_past_deadline()]),
                **extra,
            )
        return output[:, len(prompt_ids) :].tolist()
