"""Deterministic numerics for GPT consensus: three nodes must produce the same bytes for the same task.

``enable_deterministic_mode`` must run before CUDA starts in the process: cuBLAS reads
``CUBLAS_WORKSPACE_CONFIG`` once, when its first handle is created. The worker calls it at start-up.
Per-task randomness never comes from leftover global state: every task is seeded right before it runs.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from cluster import envs

logger = logging.getLogger(__name__)

# ":4096:8" (eight 4 MiB workspaces) makes cuBLAS pick the same reduction order on every call.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
# vLLM (>= 0.11) reads this at import: kernels whose results do not depend on the batch a request is in.
VLLM_BATCH_INVARIANT_ENV = envs.VLLM_BATCH_INVARIANT.name


class DeterminismError(RuntimeError):
    """Deterministic mode was asked for too late (CUDA already started with another cuBLAS config)."""


def enable_deterministic_mode() -> None:
    """Set cuBLAS workspace, deterministic algorithms and no TF32 / reduced-precision reductions."""
    current = envs.CUBLAS_WORKSPACE_CONFIG.get()
    if torch.cuda.is_initialized() and current != CUBLAS_WORKSPACE_CONFIG:
        raise DeterminismError(
            f"CUDA is already initialized with CUBLAS_WORKSPACE_CONFIG={current!r}; call "
            "enable_deterministic_mode() at worker start, before anything touches the GPU"
        )
    os.environ[envs.CUBLAS_WORKSPACE_CONFIG.name] = CUBLAS_WORKSPACE_CONFIG
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    _disable_reduced_precision()
    logger.info("[determinism] enabled cublas_workspace=%s", CUBLAS_WORKSPACE_CONFIG)


def _disable_reduced_precision() -> None:
    # NOTE: TF32 and fp16/bf16 reduced-precision reductions change the rounding of fp32 and half matmuls
    # from one kernel choice to the next; both are off so that a matmul's bits depend on its inputs only.
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9: the precision API replaces allow_tf32
        matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cudnn.rnn.fp32_precision = "ieee"
    else:  # pragma: no cover - older torch
        matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    matmul.allow_fp16_reduced_precision_reduction = False
    matmul.allow_bf16_reduced_precision_reduction = False


def is_deterministic_mode() -> bool:
    return torch.are_deterministic_algorithms_enabled() and (
        envs.CUBLAS_WORKSPACE_CONFIG.get() == CUBLAS_WORKSPACE_CONFIG
    )


def enable_vllm_batch_invariance() -> None:
    """Ask vLLM for batch-invariant kernels; must run before ``import vllm``."""
    os.environ[VLLM_BATCH_INVARIANT_ENV] = "1"


def seed_task(seed: int) -> None:
    """Reseed every global generator a library may draw from (torch on all devices, Python, numpy).

    transformers' ``generate`` samples from torch's global generator and takes none of its own, so the
    engine calls this right before each ``generate`` while it holds the engine's lock.
    """
    torch.manual_seed(seed)  # seeds the CPU generator and every CUDA/MPS device's default generator
    random.seed(seed)
    np.random.seed(seed % 2**32)
