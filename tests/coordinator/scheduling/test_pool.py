"""The worker pool on a real local Ray with real engines on tiny models: results, placement by card model,
warm-model preference, task errors, transient retries and a worker killed mid-job."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.coordinator.scheduling.pool import WorkerPool
from cluster.coordinator.scheduling.runner import JobDeadlineExceeded
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import ModelInvalid, ModelNotAvailable
from cluster.protocol.hashes import gpt_result
from cluster.protocol.phash import sd_result
from cluster.workers.messages import WorkerInfo
from cluster.workers.models.builders import build_tiny_causal_lm
from tests.coordinator.scheduling.factories import gpt_job, sd_job

Run = Callable[..., Any]


async def infos_by_id(pool: WorkerPool) -> dict[str, WorkerInfo]:
    return {info.worker_id: info for info in await pool.workers_info()}


def test_gpt_and_sd_jobs_return_protocol_results(
    pool: WorkerPool, card_a: CardModel, run: Run, tiny_lm_dir: Path, tiny_sd_dir: Path
) -> None:
    gpt = run(pool.run_job(card_a, gpt_job(tiny_lm_dir)))
    assert gpt.ok and gpt.attempts == 1 and len(gpt.files) == 1
    assert gpt.result == gpt_result(gpt.files[0])
    response = json.loads(gpt.files[0])
    assert list(response) == ["model", "choices", "usage"] and response["model"] == str(tiny_lm_dir)

    sd = run(pool.run_job(card_a, sd_job(tiny_sd_dir)))
    assert sd.ok and len(sd.files) == 2 and all(f.startswith(b"\x89PNG") for f in sd.files)
    assert sd.result == sd_result(list(sd.files)) and len(sd.result) == 16


def test_jobs_run_only_on_their_card_models_workers(
    pool: WorkerPool, card_a: CardModel, card_b: CardModel, run: Run, tiny_lm_dir: Path
) -> None:
    async def burst() -> list[tuple[CardModel, Any]]:
        keys = [card_a, card_b] * 3  # more jobs than workers: some wait in their group's line
        jobs = [pool.run_job(key, gpt_job(tiny_lm_dir, seed=i)) for i, key in enumerate(keys)]
        return list(zip(keys, await asyncio.gather(*jobs), strict=True))

    outcomes = run(burst())
    infos = run(infos_by_id(pool))
    assert pool.num_gpus(card_a) == 2 and pool.num_gpus(card_b) == 3
    for key, job in outcomes:
        assert job.ok and job.worker_id in pool.worker_ids(key)
        assert infos[job.worker_id].card == key  # the actor's own word for its card model
    assert set(pool.worker_ids(card_a)).isdisjoint(pool.worker_ids(card_b))


def test_prefers_a_worker_that_holds_the_model(
    pool: WorkerPool, card_a: CardModel, run: Run, models_dir: Path
) -> None:
    model = str(build_tiny_causal_lm(models_dir / "tiny-lm-preferred", seed=1))

    def job(on_model: str | Path) -> str:
        return run(pool.run_job(card_a, gpt_job(on_model))).worker_id

    holder = job(model)
    (sibling,) = set(pool.worker_ids(card_a)) - {holder}
    # Keep the holder busiest, so that "least busy" alone would pick the sibling.
    while (infos := run(infos_by_id(pool)))[holder].num_jobs <= infos[sibling].num_jobs:
        assert job(model) == holder
    assert job(model) == holder
    other_model = models_dir / "tiny-lm-other"  # held warm by neither: the least busy worker runs it
    build_tiny_causal_lm(other_model, seed=2)
    assert job(other_model) == sibling
    assert run(pool.workers_info()) and model in ray.get(
        ray.get_actor(holder, namespace=pool.namespace).loaded_models.remote()
    )


def test_task_errors_are_returned_at_once(
    pool: WorkerPool, card_a: CardModel, run: Run, tmp_path: Path
) -> None:
    missing = run(pool.run_job(card_a, gpt_job(tmp_path / "nowhere")))
    assert isinstance(missing.error, ModelInvalid) and missing.attempts == 1 and not missing.ok
    assert missing.files == () and missing.result == b""


def place_in_hub_cache(cache_dir: Path, repo_id: str, model_dir: Path) -> None:
    """What a prefetch by another worker leaves behind: a snapshot and the ref pointing at it."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    shutil.copytree(model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_transient_error_is_retried_until_the_model_arrives(
    pool: WorkerPool, card_a: CardModel, run: Run, loop: asyncio.AbstractEventLoop, tiny_lm_dir: Path
) -> None:
    repo_id = "helium-tests/late-model"
    jobs_before = sum(info.num_jobs for info in run(pool.workers_info()) if info.card == card_a)
    # The store is offline and the model is not in the shared cache yet: ModelNotAvailable (RETRY).
    job = asyncio.run_coroutine_threadsafe(pool.run_job(card_a, gpt_job(repo_id)), loop)
    deadline = time.time() + 60
    while sum(info.num_jobs for info in run(pool.workers_info()) if info.card == card_a) == jobs_before:
        assert time.time() < deadline and not job.done(), "no attempt failed for the missing model"
        time.sleep(0.05)  # a first attempt has failed: the model arrives between attempts
    place_in_hub_cache(Path(pool.rig.model_cache_dir), repo_id, tiny_lm_dir)
    result = job.result(60)
    assert result.ok and result.attempts >= 2
    assert json.loads(result.files[0])["model"] == repo_id


def test_transient_error_until_the_deadline_raises(pool: WorkerPool, card_b: CardModel, run: Run) -> None:
    started = time.time()
    with pytest.raises(JobDeadlineExceeded, match="missed its deadline") as caught:
        run(pool.run_job(card_b, gpt_job("helium-tests/never-there", timeout_s=1.5)))
    assert caught.value.attempts >= 2 and isinstance(caught.value.last_error, ModelNotAvailable)
    assert time.time() - started < 5


def wait_until_idle(pool: WorkerPool, card: CardModel, run: Run, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while any(i.is_busy for i in run(pool.workers_info()) if i.card == card):
        assert time.time() < deadline, "workers still busy"
        time.sleep(0.1)


def wait_until_busy(pool: WorkerPool, card: CardModel, run: Run, count: int, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while sum(i.is_busy for i in run(pool.workers_info()) if i.card == card) < count:
        assert time.time() < deadline, "workers not busy"
        time.sleep(0.05)


def test_jobs_wait_in_line_and_a_missed_deadline_stops_the_job(
    pool: WorkerPool,
    card_a: CardModel,
    run: Run,
    loop: asyncio.AbstractEventLoop,
    tiny_lm_dir: Path,
    tiny_sd_dir: Path,
) -> None:
    wait_until_idle(pool, card_a, run)
    with pytest.raises(JobDeadlineExceeded) as late:
        run(pool.run_job(card_a, sd_job(tiny_sd_dir, steps=100, size=128, timeout_s=0.3)))
    assert (
        late.value.attempts == 1
    )  # it started; the engine stops at the deadline (tests/engines/test_deadline.py)
    wait_until_idle(pool, card_a, run)
    slow = sd_job(tiny_sd_dir, steps=100, size=128, timeout_s=120)
    jobs = [asyncio.run_coroutine_threadsafe(pool.run_job(card_a, slow), loop) for _ in range(2)]
    wait_until_busy(pool, card_a, run, 2)
    with pytest.raises(JobDeadlineExceeded, match=r"after 0 attempt.*2 busy"):
        run(pool.run_job(card_a, gpt_job(tiny_lm_dir, timeout_s=1.0)))
    assert all(job.result(120).ok for job in jobs)
    wait_until_idle(pool, card_a, run)
    assert run(pool.run_job(card_a, gpt_job(tiny_lm_dir))).ok


def test_a_restarted_coordinator_reuses_the_running_workers(
    pool: WorkerPool, card_a: CardModel, run: Run, rig: Any, engine: Any, tiny_lm_dir: Path
) -> None:
    before = run(infos_by_id(pool))
    again = run(WorkerPool.create(rig, engine, namespace=pool.namespace))  # not shut down: it shares them
    after = run(infos_by_id(again))
    assert {w: i.pid for w, i in after.items()} == {w: i.pid for w, i in before.items()}
    assert run(again.run_job(card_a, gpt_job(tiny_lm_dir))).ok


def test_killed_worker_job_finishes_on_a_sibling(
    pool: WorkerPool, card_a: CardModel, run: Run, loop: asyncio.AbstractEventLoop, tiny_sd_dir: Path
) -> None:
    slow = sd_job(tiny_sd_dir, steps=100, size=128, timeout_s=90)  # seconds: time to find and kill its worker
    wait_until_idle(pool, card_a, run)
    job = asyncio.run_coroutine_threadsafe(pool.run_job(card_a, slow), loop)
    busy: list[WorkerInfo] = []
    while not busy and not job.done():
        busy = [i for i in run(pool.workers_info()) if i.is_busy and i.card == card_a]
    assert busy, "the job ended before its worker could be killed"
    victim = busy[0]
    ray.kill(ray.get_actor(victim.worker_id, namespace=pool.namespace))
    result = job.result(90)
    assert result.ok and result.worker_id != victim.worker_id and result.attempts == 2
    assert result.result == sd_result(list(result.files))

    # The pool brings the worker back under its name, in a new process.
    deadline = time.time() + 60
    while pool.num_alive(card_a) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert pool.num_alive(card_a) == 2
    assert run(infos_by_id(pool))[victim.worker_id].pid != victim.pid
