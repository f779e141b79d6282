"""One local Ray cluster and one worker pool for this folder: 2 workers of card A, 3 of card B.

Starting Ray and five worker processes costs most of this folder's time, so every test shares them and
leaves them as it found them (all workers up); they end with the folder's last test (package scope).
The pool lives on one event loop in a background thread, as it does in the coordinator; ``run`` submits a
coroutine to it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from cluster.config import EngineConfig, RigConfig, VirtualGpus
from cluster.protocol.cards import CardModel
from cluster.workers.models.builders import build_tiny_causal_lm
from cluster.workers.models.sd_builders import build_tiny_sd
from tests.coordinator.scheduling.factories import background_loop

T = TypeVar("T")
CARD_A = "Test Virtual Card A"
CARD_B = "Test Virtual Card B"
RUN_TIMEOUT_S = 120.0


@pytest.fixture(scope="package")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="package")
def tiny_lm_dir(models_dir: Path) -> Path:
    return build_tiny_causal_lm(models_dir / "tiny-lm")


@pytest.fixture(scope="package")
def tiny_sd_dir(models_dir: Path) -> Path:
    return build_tiny_sd(models_dir / "tiny-sd")


@pytest.fixture(scope="package")
def rig(tmp_path_factory: pytest.TempPathFactory) -> RigConfig:
    return RigConfig(
        name="test-workers",
        device="cpu",
        discover_gpus=False,
        places_per_gpu=1,
        virtual_gpus=[
            VirtualGpus(card_name=CARD_A, vram_gb=8, count=2),
            VirtualGpus(card_name=CARD_B, vram_gb=16, count=3),
        ],
        model_cache_dir=str(tmp_path_factory.mktemp("hub-cache")),
        vram_budget_fraction=0.5,
    )


@pytest.fixture(scope="package")
def engine() -> EngineConfig:
    # runtime_tag None: the card model takes the transformers engine's own tag, as on a real rig.
    return EngineConfig(text="transformers", image="diffusers", deterministic=True, runtime_tag=None)


@pytest.fixture(scope="package")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    with background_loop() as running:
        yield running


@pytest.fixture(scope="package")
def run(loop: asyncio.AbstractEventLoop) -> Callable[[Coroutine[Any, Any, T]], T]:
    def run(coroutine: Coroutine[Any, Any, T], timeout_s: float = RUN_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout_s)

    return run


@pytest.fixture(scope="package")
def ray_cluster(rig: RigConfig, engine: EngineConfig) -> Iterator[None]:
    import ray

    from cluster.coordinator.scheduling.placement import rig_ray_resources

    env = {name: os.environ[name] for name in ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    ray.init(
        address="local",  # never join a cluster that another test or a `ray start` left running
        num_cpus=2,
        resources=rig_ray_resources(rig, engine),
        namespace="helium-tests",
        include_dashboard=False,
        object_store_memory=256 * 1024**2,
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="package")
def pool(ray_cluster: None, rig: RigConfig, engine: EngineConfig, run: Callable[..., Any]) -> Iterator[Any]:
    from cluster.coordinator.scheduling.pool import WorkerPool

    pool = run(WorkerPool.create(rig, engine, namespace="helium-tests"))
    try:
        yield pool
    finally:
        run(pool.shutdown())


def card_named(pool: Any, gpu_name: str) -> CardModel:
    return next(card for card in pool.card_models() if card.gpu_name == gpu_name)


@pytest.fixture(scope="package")
def card_a(pool: Any) -> CardModel:
    return card_named(pool, CARD_A)


@pytest.fixture(scope="package")
def card_b(pool: Any) -> CardModel:
    return card_named(pool, CARD_B)
