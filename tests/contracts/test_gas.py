"""A steady-state GPT task costs at most 1.1M gas from createTask to the upload, all calls summed.

Gas is exact for a given draw, so this is a bound, not a timing: benchmarks/chain_gas.py records the
figures step by step (benchmarks/results/chain_gas.md), this keeps them from creeping back (the
contracts before the per-node seals spent 1.46-1.58M among 3 nodes)."""

from __future__ import annotations

from statistics import median

import pytest

from cluster.chain.contracts import TaskType
from tests.contracts.net import ETHER, Net

LIFECYCLE_GAS_BUDGET = 1_100_000
RESULT = b"the same answer, byte for byte"
WARM_UP = 8  # every node's seal, weight classes and round positions written once
MEASURED = 5


def _gpt_lifecycle_gas(net: Net, creator: str) -> int:
    task_id, receipt = net.create_task(creator, TaskType.GPT, ETHER)
    total = receipt["gasUsed"]
    nodes = net.selected(task_id)
    total += sum(net.commit(task_id, r, RESULT)["gasUsed"] for r in range(3))
    total += sum(net.disclose(task_id, r)["gasUsed"] for r in range(3))
    result_round = net.get_task(task_id)["resultRound"]
    return total + net.upload(task_id, result_round, nodes[result_round])["gasUsed"]


@pytest.mark.parametrize("num_nodes", [3, 8])
def test_a_steady_state_gpt_lifecycle_fits_1_1m_gas(net: Net, num_nodes: int):
    net.join_all(net.accounts[3 : 3 + num_nodes])
    creator = net.accounts[1]
    for _ in range(WARM_UP):
        _gpt_lifecycle_gas(net, creator)
    totals = [_gpt_lifecycle_gas(net, creator) for _ in range(MEASURED)]
    assert median(totals) <= LIFECYCLE_GAS_BUDGET, totals
    assert net.task_counters()["succeeded"] == WARM_UP + MEASURED
