"""Loaded models kept warm in memory, least recently used evicted first, within a byte budget.

Sizes come from the parameters and buffers a model holds (tensors shared between models, such as a
refiner's VAE, are counted once per model: the budget errs on the safe side). A model larger than the
whole budget is returned to its caller but not kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _modules_of(obj: Any) -> Iterator[torch.nn.Module]:
    if isinstance(obj, torch.nn.Module):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _modules_of(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _modules_of(value)
    elif hasattr(obj, "components") and isinstance(obj.components, dict):  # a diffusers pipeline
        yield from _modules_of(obj.components)
    elif is_dataclass(obj) and not isinstance(obj, type):
        for field in fields(obj):
            yield from _modules_of(getattr(obj, field.name))


def model_nbytes(obj: Any) -> int:
    """Bytes of the distinct tensors (parameters and buffers) that ``obj`` holds.

    An object that manages its own memory (a vLLM engine) states it in a ``num_bytes_hint`` attribute.
    """
    hint = getattr(obj, "num_bytes_hint", None)
    if hint is not None:
        return int(hint)
    seen: set[tuple[int, int]] = set()
    total = 0
    for module in _modules_of(obj):
        for tensor in [*module.parameters(), *module.buffers()]:
            key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
            if tensor.device.type == "meta" or key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    """An LRU map of loaded models within ``budget_bytes``. Thread-safe; loads one model at a time."""

    def __init__(self, budget_bytes: int, size_of: Callable[[Any], int] = model_nbytes) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"{budget_bytes=} must be positive")
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.RLock()
        self.num_loads = 0
        self.num_evictions = 0

    @property
    def num_bytes(self) -> int:
        return sum(size for _, size in self._entries.values())

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get_or_load(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
            value = load()
            self.num_loads += 1
            size = self._size_of(value)
            if size > self.budget_bytes:
                logger.warning(
                    "[cache] model larger than budget key=%s bytes=%d budget=%d; not kept",
                    key,
                    size,
                    self.budget_bytes,
                )
                self.clear()
                return value
            while self._entries and self.num_bytes + size > self.budget_bytes:
                self._evict_oldest()
            self._entries[key] = (value, size)
            logger.info("[cache] loaded key=%s bytes=%d total=%d", key, size, self.num_bytes)
            return value

    def _evict_oldest(self) -> None:
        key, (_, size) = self._entries.popitem(last=False)
        self.num_evictions += 1
        logger.info("[cache] evicted key=%s bytes=%d", key, size)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def evict(self, key: Hashable) -> bool:
        with self._lock:
            return self._entries.pop(key, None) is not None

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._evict_oldest()
