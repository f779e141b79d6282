"""Tiny random-weight models built once per session into temporary directories (no hub, no internet)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers.utils import logging as hf_logging

from cluster import envs
from cluster.workers.engines.determinism import enable_deterministic_mode
from cluster.workers.engines.text_transformers import TransformersTextEngine
from cluster.workers.models.builders import build_tiny_causal_lm
from cluster.workers.models.cache import ModelCache
from cluster.workers.models.store import ModelStore

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()
# As a worker does at start-up, before anything could touch a GPU.
enable_deterministic_mode()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="session")
def tiny_lm_plain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same layout without a chat template: prompts are the contents joined by newlines."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm-plain", with_chat_template=False)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.workers.models.sd_builders import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def offline_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("hub-cache"), is_offline=True)


@pytest.fixture(scope="session")
def text_engine(offline_store: ModelStore) -> TransformersTextEngine:
    """One engine for the session, as a worker keeps one: tests also check it carries no state over."""
    return TransformersTextEngine(offline_store, ModelCache(budget_bytes=2 * 1024**3), envs.TEST_DEVICE.get())


@pytest.fixture(scope="session")
def image_engine(offline_store: ModelStore):  # type: ignore[no-untyped-def]
    from cluster.workers.engines.image_diffusers import DiffusersImageEngine

    return DiffusersImageEngine(offline_store, ModelCache(budget_bytes=2 * 1024**3), envs.TEST_DEVICE.get())


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.workers.models.sd_builders import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sdxl", layout="sdxl", seed=1)


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    from cluster.workers.models.sd_builders import build_tiny_controlnet

    return build_tiny_controlnet(tmp_path_factory.mktemp("models") / "tiny-controlnet", tiny_sd_dir)
