"""Engines: validated task arguments in, result files out. Chosen by config (``engine.text``)."""

from __future__ import annotations

import tempfile

from cluster.config import EngineConfig
from cluster.workers.engines.base import ImageEngine, ImageResult, TextEngine, TextResult
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore


def make_text_engine(
    kind: str,
    store: ModelStore,
    cache: ModelCache,
    device: str = "cpu",
    *,
    num_gpus: int = 1,
    memory_fraction: float = 0.85,
) -> TextEngine:
    """The text engine named by ``engine.text``: "transformers" (any device) or "vllm" (CUDA), spread over
    ``num_gpus`` GPUs and using ``memory_fraction`` of their memory (vLLM's own budget)."""
    if kind == "transformers":
        from cluster.workers.engines.text_transformers import TransformersTextEngine

        return TransformersTextEngine(store, cache, device, num_gpus=num_gpus)
    if kind == "vllm":
        from cluster.workers.engines.text_vllm import VllmTextEngine

        return VllmTextEngine(
            store, cache, gpu_memory_utilization=memory_fraction, tensor_parallel_size=num_gpus
        )
    raise ValueError(f"engine.text={kind!r} is not one of 'transformers', 'vllm'")


def parallel_tag(text_engine: str) -> str:
    """How a text engine spreads one model over several GPUs, as a worker's runtime tag names it:
    vLLM splits every layer (tensor parallel, ``tp``); transformers places whole layers on each GPU in
    turn (``pp``)."""
    return "tp" if text_engine == "vllm" else "pp"


def runtime_tag_of(engine: EngineConfig) -> str:
    """The card model's runtime tag: ``engine.runtime_tag`` if set, else the text engine's own tag (its
    name and version, and torch's for transformers). The one function every part uses for it.

    Raises ImportError where the text engine is not installed (vLLM off a GPU host).
    """
    if engine.runtime_tag:
        return engine.runtime_tag
    # An engine object loads nothing until its first task, so building one only to ask its tag is cheap.
    store = ModelStore(tempfile.gettempdir(), is_offline=True)
    return make_text_engine(engine.text, store, ModelCache(budget_bytes=1)).runtime_tag()


__all__ = [
    "ImageEngine",
    "ImageResult",
    "TextEngine",
    "TextResult",
    "make_text_engine",
    "parallel_tag",
    "runtime_tag_of",
]
