"""Engines: validated task arguments in, result files out. Chosen by config (``engine.text``)."""

from __future__ import annotations

from cluster.workers.engines.base import ImageEngine, ImageResult, TextEngine, TextResult
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore


def make_text_engine(kind: str, store: ModelStore, cache: ModelCache, device: str = "cpu") -> TextEngine:
    """The text engine named by ``engine.text``: "transformers" (any device) or "vllm" (CUDA)."""
    if kind == "transformers":
        from cluster.workers.engines.text_transformers import TransformersTextEngine

        return TransformersTextEngine(store, cache, device)
    if kind == "vllm":
        from cluster.workers.engines.text_vllm import VllmTextEngine

        return VllmTextEngine(store, cache)
    raise ValueError(f"engine.text={kind!r} is not one of 'transformers', 'vllm'")


__all__ = ["ImageEngine", "ImageResult", "TextEngine", "TextResult", "make_text_engine"]
