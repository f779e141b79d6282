"""Map what torch, transformers, diffusers and huggingface_hub raise onto the task error taxonomy.

Two stages fail differently. Loading: a model that is missing, of the wrong architecture or that cannot
take the asked dtype/quantization is the task's fault (``ModelInvalid``); a hub that did not answer is
transient (``ModelNotAvailable``). Running: memory is ``OutOfMemory``, anything else ``ExecutionError``;
argument problems are caught before generation starts and raised as ``ArgumentsInvalid``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from cluster.protocol.errors import (
    ExecutionError,
    ModelInvalid,
    ModelNotAvailable,
    OutOfMemory,
    TaskExecutionError,
)

logger = logging.getLogger(__name__)

_OOM_MARKERS = ("out of memory", "cuda error: out of memory", "mps backend out of memory")
# Exceptions of unreadable checkpoints that do not derive from OSError/ValueError.
_DAMAGED_CHECKPOINT_ERRORS = {"SafetensorError", "UnpicklingError"}


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def _is_transient_hub_error(exc: BaseException) -> bool:
    """Network trouble or an offline cache miss: another try (or another host) may succeed."""
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return isinstance(exc, ConnectionError | TimeoutError)
    if isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled | ConnectionError | TimeoutError):
        return True
    name = type(exc).__name__
    return name in {"ConnectTimeout", "ReadTimeout", "ConnectError", "ConnectionError"}


def map_load_error(exc: BaseException, model: str) -> TaskExecutionError:
    """The taxonomy error for a failure while loading ``model``."""
    if isinstance(exc, TaskExecutionError):
        return exc
    if is_out_of_memory(exc):
        return OutOfMemory(f"out of memory while loading {model!r}: {exc}")
    if _is_transient_hub_error(exc):
        return ModelNotAvailable(f"model {model!r} could not be fetched now: {exc}")
    is_damaged = type(exc).__name__ in _DAMAGED_CHECKPOINT_ERRORS
    if is_damaged or isinstance(
        exc, OSError | ValueError | KeyError | TypeError | AttributeError | ImportError
    ):
        # transformers/diffusers raise these for a missing config, an unknown model_type, a checkpoint of
        # another architecture, or a dtype/quantization the model or the device cannot take.
        return ModelInvalid(f"model {model!r} cannot be loaded: {type(exc).__name__}: {exc}")
    return ExecutionError(f"loading {model!r} failed: {type(exc).__name__}: {exc}")


def map_run_error(exc: BaseException) -> TaskExecutionError:
    """The taxonomy error for a failure while running inference."""
    if isinstance(exc, TaskExecutionError):
        return exc
    if is_out_of_memory(exc):
        return OutOfMemory(f"out of memory during inference: {exc}")
    return ExecutionError(f"inference failed: {type(exc).__name__}: {exc}")


def release_device_memory() -> None:
    """Return cached allocator blocks after an OOM so that a retry starts from a clean pool."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


@contextmanager
def loading(model: str) -> Iterator[None]:
    """Raise every failure inside as the taxonomy error for loading ``model``."""
    try:
        yield
    except Exception as exc:
        mapped = map_load_error(exc, model)
        if mapped is not exc:
            logger.warning("[engine] load failed model=%s code=%s", model, mapped.code.value, exc_info=exc)
        if isinstance(mapped, OutOfMemory):
            release_device_memory()
        raise mapped from exc


@contextmanager
def running() -> Iterator[None]:
    """Raise every failure inside as the taxonomy error for inference."""
    try:
        yield
    except Exception as exc:
        mapped = map_run_error(exc)
        if mapped is not exc:
            logger.warning("[engine] run failed code=%s", mapped.code.value, exc_info=exc)
        if isinstance(mapped, OutOfMemory):
            release_device_memory()
        raise mapped from exc
