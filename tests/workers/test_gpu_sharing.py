"""Several tasks at once on one (virtual) GPU, on a real Ray cluster, every task's bytes unchanged.

- replicas: two ``GpuWorker`` actors share one virtual GPU (half the card resource each), each with its
  own transformers engine and warm tiny model;
- batched: one async ``BatchedGpuWorker`` owning two virtual GPUs (a ``2x`` card model, tensor parallel
  2) sends its concurrent GPT jobs to vLLM's async engine, here the stand-in of ``tests/standins/vllm``
  (real continuous batching over a real tiny model; it records every batch it ran).

The stand-in is on the workers' PYTHONPATH only, so this test process never imports it as ``vllm``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import envs
from cluster.config import EngineConfig, RigConfig, VirtualGpus, WorkerLayout
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import ExecutionError
from cluster.workers.messages import JobReply, JobRequest
from tests.coordinator.scheduling.factories import background_loop, gpt_job, sd_job

STANDINS = Path(__file__).resolve().parents[1] / "standins"
NUM_TASKS = 3
FAIL_SEED = 666  # the stand-in fails this seed's request inside its batch (VLLM_STANDIN_FAIL_SEED)
SEEDS = [11, 12, 13]
TIMEOUT_S = 120.0


def rig(name: str, card_name: str, count: int, cache_dir: Path, **overrides: Any) -> RigConfig:
    return RigConfig(
        name=name, device="cpu", discover_gpus=False, model_cache_dir=str(cache_dir),
        vram_budget_fraction=0.5, virtual_gpus=[VirtualGpus(card_name=card_name, vram_gb=8, count=count)],
        **overrides,
    )  # fmt: skip


TRANSFORMERS = EngineConfig(text="transformers", image="diffusers", deterministic=True, runtime_tag=None)
# The runtime tag is given: working it out would import vllm in this process, where it does not exist.
VLLM = EngineConfig(
    text="vllm", image="diffusers", deterministic=True, runtime_tag="vllm-0.0-standin-batch-invariant"
)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slot-modes")


@pytest.fixture(scope="module")
def rigs(tmp: Path) -> dict[str, RigConfig]:
    return {
        "replicas": rig("replicas", "Replica Virtual Card", 1, tmp / "hub", places_per_gpu=2),
        "batched": rig(
            "batched", "Batch Virtual Card", 2, tmp / "hub", places_per_gpu=NUM_TASKS, gpu_sharing="batched",
            worker_layouts=[WorkerLayout(card_name="Batch Virtual Card", gpus_per_worker=[2])],
        ),
    }  # fmt: skip


@pytest.fixture(scope="module")
def tiny_lm(tmp: Path) -> Path:
    from cluster.workers.models.builders import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp / "tiny-lm")


@pytest.fixture(scope="module")
def record(tmp: Path) -> Path:
    return tmp / "standin-batches.jsonl"


@pytest.fixture(scope="module")
def min_batch_file(tmp: Path) -> Path:
    path = tmp / "min-batch"
    path.write_text("1")
    return path


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    with background_loop() as running:
        yield running


@pytest.fixture(scope="module")
def run(loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    return lambda coroutine: asyncio.run_coroutine_threadsafe(coroutine, loop).result(TIMEOUT_S)


@pytest.fixture(scope="module")
def pools(
    rigs: dict[str, RigConfig], record: Path, min_batch_file: Path, run: Callable[..., Any]
) -> Iterator[dict[str, Any]]:
    import ray

    from cluster.coordinator.scheduling.placement import rig_ray_resources
    from cluster.coordinator.scheduling.pool import WorkerPool

    resources = {
        **rig_ray_resources(rigs["replicas"], TRANSFORMERS),
        **rig_ray_resources(rigs["batched"], VLLM),
    }
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(p for p in [str(STANDINS), envs.PYTHONPATH.get()] if p),
        "VLLM_STANDIN_RECORD": str(record),
        "VLLM_STANDIN_MIN_BATCH_FILE": str(min_batch_file),
        "VLLM_STANDIN_FAIL_SEED": str(FAIL_SEED),
    }
    ray.init(
        address="local", num_cpus=2, resources=resources, namespace="helium-slot-modes",
        include_dashboard=False, object_store_memory=256 * 1024**2, runtime_env={"env_vars": env},
        log_to_driver=False,
    )  # fmt: skip
    created: dict[str, Any] = {}
    try:
        created["replicas"] = run(
            WorkerPool.create(rigs["replicas"], TRANSFORMERS, namespace="helium-slot-modes")
        )
        created["batched"] = run(WorkerPool.create(rigs["batched"], VLLM, namespace="helium-slot-modes"))
        yield created
    finally:
        for pool in created.values():
            run(pool.shutdown())
        ray.shutdown()


def request(model: Path, seed: int) -> JobRequest:
    return gpt_job(model, seed=seed, do_sample=True, temperature=0.9, timeout_s=TIMEOUT_S)


def only_card(pool: Any) -> CardModel:
    (card,) = pool.card_models()
    return card


async def one_by_one(pool: Any, card: CardModel, requests: list[JobRequest]) -> list[Any]:
    return [await pool.run_job(card, r) for r in requests]


async def all_at_once(pool: Any, card: CardModel, requests: list[JobRequest]) -> list[Any]:
    jobs = (pool.run_job(card, r) for r in requests)
    return list(await asyncio.gather(*jobs))


def test_two_replicas_per_gpu_run_tasks_at_once_with_their_bytes_alone(pools, tiny_lm, run) -> None:  # type: ignore[no-untyped-def]
    pool = pools["replicas"]
    card = only_card(pool)
    assert (card.gpu_name, card.vram_gb) == ("Replica Virtual Card", 4)  # each replica declares half the VRAM
    assert pool.num_gpus(card) == 2 and pool.num_places(card) == 2
    requests = [request(tiny_lm, seed) for seed in [*SEEDS, 14]]
    alone = run(one_by_one(pool, card, requests))
    together = run(all_at_once(pool, card, requests))
    assert all(job.error is None for job in alone + together)
    assert [job.files for job in together] == [job.files for job in alone]
    assert len({job.worker_id for job in together}) == 2  # both replicas took jobs
    infos = run(pool.workers_info())
    assert len({info.pid for info in infos}) == 2  # two processes, each with its own engine


def batches(record: Path) -> list[list[str]]:
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    return [entry["batch"] for entry in lines if entry["event"] == "step"]


def test_batched_jobs_share_vllm_batches_with_their_bytes_alone(
    pools, tiny_lm, record, min_batch_file, run
) -> None:  # type: ignore[no-untyped-def]
    pool = pools["batched"]
    card = only_card(pool)
    assert (card.gpu_name, card.vram_gb, card.runtime) == (
        "2x Batch Virtual Card", 16, "vllm-0.0-standin-batch-invariant-tp2",
    )  # fmt: skip
    assert pool.num_gpus(card) == 1 and pool.num_places(card) == NUM_TASKS
    requests = [request(tiny_lm, seed) for seed in SEEDS]
    min_batch_file.write_text("1")
    alone = run(one_by_one(pool, card, requests))
    num_steps_alone = len(batches(record))
    min_batch_file.write_text(str(NUM_TASKS))  # the next batch starts once all three requests wait
    together = run(all_at_once(pool, card, requests))
    assert all(job.error is None for job in alone + together)
    assert [job.files for job in together] == [job.files for job in alone]
    assert max(len(b) for b in batches(record)[:num_steps_alone]) == 1
    assert max(len(b) for b in batches(record)[num_steps_alone:]) == NUM_TASKS
    engines = [json.loads(line) for line in record.read_text().splitlines() if '"event": "engine"' in line]
    assert [e["tensor_parallel_size"] for e in engines] == [2]  # one engine, warm for every job, over 2 GPUs


def test_a_request_failing_inside_a_batch_fails_only_its_job(
    pools, tiny_lm, record, min_batch_file, run
) -> None:  # type: ignore[no-untyped-def]
    import ray

    pool = pools["batched"]
    (worker_id,) = pool.worker_ids(only_card(pool))
    worker = ray.get_actor(worker_id, namespace="helium-slot-modes")
    min_batch_file.write_text("1")
    alone = {
        seed: ray.get(worker.run_job.remote(request(tiny_lm, seed)), timeout=TIMEOUT_S) for seed in SEEDS[:2]
    }
    num_steps = len(batches(record))
    min_batch_file.write_text("3")
    seeds = [SEEDS[0], FAIL_SEED, SEEDS[1]]
    replies: list[JobReply] = ray.get(
        [worker.run_job.remote(request(tiny_lm, s)) for s in seeds], timeout=TIMEOUT_S
    )
    ok, failed, ok_too = replies
    assert isinstance(failed.error, ExecutionError) and "stand-in fault" in str(failed.error)
    assert failed.files == () and failed.result == b""
    assert (ok.error, ok_too.error) == (None, None)
    assert (ok.files, ok_too.files) == (alone[SEEDS[0]].files, alone[SEEDS[1]].files)
    first = batches(record)[num_steps]
    assert len(first) == 3  # the failing request shared its batch with the two that succeeded


def test_a_batched_worker_runs_image_jobs_alone_beside_its_gpt_requests(
    pools, tiny_lm, tmp, min_batch_file, run
) -> None:  # type: ignore[no-untyped-def]
    from cluster.workers.models.sd_builders import build_tiny_sd

    pool = pools["batched"]
    card = only_card(pool)
    sd = sd_job(build_tiny_sd(tmp / "tiny-sd"), size=64, num_images=1, timeout_s=TIMEOUT_S)
    min_batch_file.write_text("1")
    (alone,) = run(one_by_one(pool, card, [sd]))
    jobs = run(all_at_once(pool, card, [sd, request(tiny_lm, SEEDS[0]), sd]))
    assert alone.error is None and all(job.error is None for job in jobs)
    assert jobs[0].files == jobs[2].files == alone.files and jobs[0].result == alone.result
