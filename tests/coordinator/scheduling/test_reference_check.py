"""The reference check: honest workers of a card model agree; a corrupt one is named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.coordinator.scheduling.pool import WorkerPool
from cluster.coordinator.scheduling.reference_check import (
    check_card_model,
    odd_ones_out,
    reference_tasks,
    results_disagree,
)
from cluster.protocol.cards import CardModel
from cluster.protocol.phash import sd_result, sd_results_match
from tests.coordinator.scheduling.factories import sd_job
from tests.faults import CorruptingPool


def test_odd_ones_out_names_the_minority_or_everyone() -> None:
    assert not results_disagree({"a": b"x", "b": b"x"}) and odd_ones_out({"a": b"x", "b": b"x"}) == []
    assert odd_ones_out({"a": b"x", "b": b"x", "c": b"y"}) == ["c"]
    assert odd_ones_out({"a": b"x", "b": b"y"}) == ["a", "b"]  # no majority: nobody can be trusted more


def test_the_check_passes_for_honest_workers(
    pool: WorkerPool, card_a: CardModel, run: Callable[..., Any], tiny_lm_dir: Path
) -> None:
    check = run(check_card_model(pool, card_a, reference_tasks(str(tiny_lm_dir)), timeout_s=90))
    assert check.ok, check.message
    assert set(check.results_by_worker) == set(pool.worker_ids(card_a))
    assert len(next(iter(check.results_by_worker.values()))) == 2 * 32  # greedy + sampled digests


def test_the_check_fails_naming_the_corrupt_worker(
    pool: WorkerPool, card_b: CardModel, run: Callable[..., Any], tiny_lm_dir: Path, tiny_sd_dir: Path
) -> None:
    corrupt = pool.worker_ids(card_b)[-1]  # a worker whose GPU returns wrong bytes
    broken = CorruptingPool(pool, lambda worker_id: worker_id == corrupt)
    check = run(check_card_model(broken, card_b, reference_tasks(str(tiny_lm_dir)), timeout_s=90))
    assert not check.ok and corrupt in check.message
    assert odd_ones_out(check.results_by_worker) == [corrupt]

    # An SD job on the corrupt worker commits a result that consensus (pHash distance) rejects.
    honest_id = pool.worker_ids(card_b)[0]
    honest, bad = (run(broken.run_job_on(w, sd_job(tiny_sd_dir, num_images=1))) for w in (honest_id, corrupt))
    assert bad.result == sd_result(list(bad.files))
    assert not sd_results_match(honest.result, bad.result)
