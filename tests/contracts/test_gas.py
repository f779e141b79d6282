"""A steady-state GPT task costs at most 1.1M gas from createTask to the upload, all calls summed.

Gas is exact for a given draw, so this is a bound, not a timing: benchmarks/chain_gas.py records the
figures step by step (benchmarks/results/chain_gas.md), this keeps them from creeping back (the
contracts before the per-node seals spent 1.46-1.58M among 3 nodes). It runs on a chain of its own
whose draws are the same on every run (tests/contracts/fixed_chain.py), so a failure reproduces to the
gas."""

from __future__ import annotations

from collections.abc import Iterator
from statistics import median

import pytest

from cluster.chain.anvil import Anvil
from cluster.chain.contracts import TaskType
from cluster.chain.deploy import Deployment, deploy_network
from tests.contracts.fixed_chain import FixedBytes, deterministic_anvil
from tests.contracts.net import ETHER, Net

LIFECYCLE_GAS_BUDGET = 1_100_000
RESULT = b"the same answer, byte for byte"
WARM_UP = 8  # every node's seal, weight classes and round positions written once
MEASURED = 5


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    """This module's own chain, in place of the session's (whose blocks carry wall-clock timestamps);
    tests/conftest.py's ``w3`` reverts it after each test, and each test draws as if it ran alone."""
    with deterministic_anvil(num_accounts=12) as node:
        yield node


@pytest.fixture(scope="module")
def deployment(anvil: Anvil) -> Deployment:
    web3 = anvil.web3()
    return deploy_network(web3, web3.eth.accounts[0])


def _gpt_lifecycle_gas(net: Net, creator: str, fixed: FixedBytes) -> int:
    task_id, receipt = net.create_task(creator, TaskType.GPT, ETHER, task_hash=fixed("task"))
    total = receipt["gasUsed"]
    nodes = net.selected(task_id)
    total += sum(net.commit(task_id, r, RESULT, nonce=fixed("nonce"))["gasUsed"] for r in range(3))
    total += sum(net.disclose(task_id, r)["gasUsed"] for r in range(3))
    result_round = net.get_task(task_id)["resultRound"]
    return total + net.upload(task_id, result_round, nodes[result_round])["gasUsed"]


@pytest.mark.parametrize("num_nodes", [3, 8])
def test_a_steady_state_gpt_lifecycle_fits_1_1m_gas(net: Net, num_nodes: int):
    net.join_all(net.accounts[3 : 3 + num_nodes])
    creator, fixed = net.accounts[1], FixedBytes()
    for _ in range(WARM_UP):
        _gpt_lifecycle_gas(net, creator, fixed)
    totals = [_gpt_lifecycle_gas(net, creator, fixed) for _ in range(MEASURED)]
    assert median(totals) <= LIFECYCLE_GAS_BUDGET, totals
    assert net.task_counters()["succeeded"] == WARM_UP + MEASURED
