"""The sampled audits' core claims (issue 28), on benchmarks/audit_incentives.py's model: no chain, fast.

Design: docs/protocol-decisions.md, "Sampled audits". Fails if a change to the model (or to the numbers
the design rests on) lets garbage pay, pays honest nodes less per GPU-second than N = 1, or takes the
GPU runs at N = 10 past the target.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "audit_incentives.py"
_SPEC = importlib.util.spec_from_file_location("audit_incentives", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
ai = importlib.util.module_from_spec(_SPEC)
sys.modules["audit_incentives"] = ai  # dataclasses look their module up
_SPEC.loader.exec_module(ai)

TASKS = 1_500


@pytest.fixture(scope="module")
def runs() -> dict[int, object]:
    return {n: ai.simulate(n, tasks=TASKS, seed=7) for n in (1, 10, 100)}


def test_garbage_node_loses_at_the_default_stake(runs) -> None:
    r = runs[10]
    assert r.garbage_seats > 0 and r.caught > 0
    assert r.garbage_expected < 0
    assert r.garbage_balance < 0
    # the balance falls: it ends below where it stood after the first quarter of the tasks
    assert r.garbage_path[-1] < r.garbage_path[len(r.garbage_path) // 4]
    assert runs[100].garbage_expected < 0


def test_honest_nodes_earn_per_gpu_second_at_least_their_n1_earnings(runs) -> None:
    base = runs[1].honest_rate()
    for n in (10, 100):
        assert runs[n].honest_rate() >= base
        assert runs[n].honest_rate_min() >= base  # every honest node, not only their sum
        assert runs[n].honest_rate() == pytest.approx(ai.RATE_CNX_PER_S)


def test_gpu_runs_and_audits_at_n10(runs) -> None:
    r = runs[10]
    assert r.runs / r.tasks <= 1.25
    assert ai.mean_runs(10) == pytest.approx(1.2)
    assert 0.07 * TASKS < r.audited < 0.13 * TASKS
    assert ai.mean_gas("gpt", 10) < ai.mean_gas("gpt", 1) / 1.8


def test_stake_bound() -> None:
    # garbage's edge over honest work changes sign at the bound S = N g - p (g = p: S = (N - 1) p)
    for n, p in ((10, 1.0), (100, 2.0)):
        bound = (n - 1) * p
        assert ai.cheat_edge(n, p, p, bound * 1.01) < 0 < ai.cheat_edge(n, p, p, bound * 0.99)
        assert ai.min_stake(n, p) >= bound
    # the defaults: 400 CNX covers a run pay of stake / (2 N) with the factor of 2
    assert ai.min_stake(10, ai.STAKE_CNX / 20, ai.SAFETY) == ai.STAKE_CNX
    # below the bound garbage pays in the simulation too
    assert ai.simulate(10, tasks=TASKS, seed=7, stake=1.0).garbage_expected > 0


def test_premium_pays_the_audits() -> None:
    # the pool's expected income per drawn task covers its expected audit cost, with the margin
    for n in (2, 10, 100):
        assert ai.premium(n) >= 2 / n
    assert ai.premium(1) == 0
    assert ai.sampled_fee(1.0, 10) == pytest.approx(1.22)


def test_pool_ends_above_its_start(runs) -> None:
    # the margin and the slashes' refills keep the pool's drift up: it ends above where it started
    assert runs[10].pool > 0


def test_deterministic() -> None:
    a = ai.simulate(10, tasks=300, seed=3)
    b = ai.simulate(10, tasks=300, seed=3)
    assert (a.garbage_balance, a.audited, a.gas) == (b.garbage_balance, b.audited, b.gas)
