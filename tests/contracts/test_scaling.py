"""A network past the size that froze the first contracts: 3,000 card models, then a whole task under
the real 30M block gas limit, every call's gas far below it and independent of the crowd."""

from __future__ import annotations

import time

from web3 import Web3

from cluster.chain.anvil import Anvil
from cluster.chain.contracts import TaskType
from cluster.chain.deploy import Deployment
from tests.contracts.crowd import REAL_BLOCK_GAS_LIMIT, join_crowd, own_card_models
from tests.contracts.net import ETHER, GPU_A, Net

NUM_CARD_MODELS = 3_000
# The first contracts walked every card model: at 3,000 a createTask cost 7-9.5M gas and past ~4,200
# none fitted a block. Now no call depends on the crowd; these bounds hold at 10 nodes as at 10,000.
CALL_GAS_BOUND = 1_000_000  # a thirtieth of a block


def test_a_whole_task_runs_under_a_30m_block_after_3000_card_models_joined(
    w3: Web3, anvil: Anvil, deployment: Deployment
):
    started = time.monotonic()
    crowd = join_crowd(anvil.rpc_url, deployment.bind(w3).contract("Node"), own_card_models(NUM_CARD_MODELS))
    print(f"{NUM_CARD_MODELS} joins in {time.monotonic() - started:.1f} s")
    net = Net(w3, deployment)  # the books start after the crowd's stakes
    assert w3.eth.get_block("latest")["gasLimit"] == REAL_BLOCK_GAS_LIMIT
    assert net.task_counters()["total"] == 0 and len(crowd) == NUM_CARD_MODELS
    assert net.view(net.node, "numAvailableNodes") == NUM_CARD_MODELS

    nodes = net.accounts[3:6]
    net.join_all(nodes, GPU_A)  # the only card model with three nodes: GPT tasks run there
    creator = net.accounts[1]
    task_id, receipt = net.create_task(creator, TaskType.GPT, ETHER)
    gas = {"createTask": receipt["gasUsed"]}
    nodes_of = net.selected(task_id)
    assert sorted(nodes_of) == sorted(nodes)
    result = b"the same answer, byte for byte"
    for r in range(3):
        gas[f"commit #{r + 1}"] = net.commit(task_id, r, result)["gasUsed"]
    for r in range(3):
        gas[f"disclose #{r + 1}"] = net.disclose(task_id, r)["gasUsed"]
    result_round = net.get_task(task_id)["resultRound"]
    gas["upload"] = net.upload(task_id, result_round, nodes_of[result_round])["gasUsed"]
    assert net.task_counters()["succeeded"] == 1
    assert max(gas.values()) < CALL_GAS_BOUND, gas

    # An SD task draws from all 3,003 nodes and 3,001 card models: created and cancelled in bounds.
    sd_id, receipt = net.create_task(creator, TaskType.SD, ETHER, vram_limit=2_000)
    assert receipt["gasUsed"] < CALL_GAS_BOUND
    assert all(net.node_info(n)["gpuVramGB"] >= 2_000 for n in net.selected(sd_id))
    net.mine_after(15 * 60 + 1)
    assert net.cancel(sd_id, creator)["gasUsed"] < CALL_GAS_BOUND
    net.assert_books()
