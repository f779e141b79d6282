"""deploy_network: wiring once, the owner's settings, Deployment JSON, and the mirrors of the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

from cluster.chain.contracts import (
    DEFAULT_DISTANCE_THRESHOLD,
    DEFAULT_KICKOUT_THRESHOLD,
    DEFAULT_NODE_STAKE_WEI,
    DEFAULT_PRICE_ESTIMATES_MS,
    DEFAULT_QUEUE_RENT_BPS_PER_HOUR,
    DEFAULT_QUEUE_SIZE_LIMIT,
    DEFAULT_RESPONSE_WINDOW_S,
    DEFAULT_TASK_TIMEOUT_S,
    AbortReason,
    TaskType,
)
from cluster.chain.deploy import ContractParameters, Deployment, deploy_network
from tests.contracts.net import ETHER, Net


def test_defaults_and_reasons_mirror_the_contracts(net: Net):
    assert net.node.functions.nodeStake().call() == DEFAULT_NODE_STAKE_WEI
    assert net.task.functions.taskTimeout().call() == DEFAULT_TASK_TIMEOUT_S
    assert net.task.functions.distanceThreshold().call() == DEFAULT_DISTANCE_THRESHOLD
    assert net.qos.functions.kickoutThreshold().call() == DEFAULT_KICKOUT_THRESHOLD
    assert net.queue.functions.sizeLimit().call() == DEFAULT_QUEUE_SIZE_LIMIT
    for task_type, (base_ms, per_unit_ms) in DEFAULT_PRICE_ESTIMATES_MS.items():
        assert net.queue.functions.baseMs(task_type).call() == base_ms
        assert net.queue.functions.perUnitMs(task_type).call() == per_unit_ms
    fns = net.task.functions
    assert fns.REASON_RESULT_ILLEGAL().call() == AbortReason.RESULT_ILLEGAL
    assert fns.REASON_ERROR_REPORTED().call() == AbortReason.ERROR_REPORTED
    assert fns.REASON_CANCELLED().call() == AbortReason.CANCELLED
    assert fns.REASON_FEE_TOO_LOW().call() == AbortReason.FEE_TOO_LOW
    assert fns.REASON_NO_ARGUMENTS().call() == AbortReason.NO_ARGUMENTS
    assert fns.REASON_NO_ARGUMENTS_REFUTED().call() == AbortReason.NO_ARGUMENTS_REFUTED
    assert fns.responseWindow().call() == DEFAULT_RESPONSE_WINDOW_S
    assert fns.queueRentBpsPerHour().call() == DEFAULT_QUEUE_RENT_BPS_PER_HOUR
    assert fns.relaySigner().call() == "0x" + "00" * 20


def test_wiring_is_set_once_by_the_owner(net: Net):
    a = net.deployment.addresses
    assert net.reverts(net.qos.functions.wire(a["Task"]), net.owner).name == "AlreadyWired"
    assert (
        net.reverts(net.node.functions.wire(a["Task"], a["QoS"], a["NetworkStats"]), net.owner).name
        == "AlreadyWired"
    )
    err = net.reverts(net.task.functions.setTaskTimeout(60), net.accounts[1])
    assert err.name == "NotOwner" and err.error_args == {"caller": net.accounts[1], "owner": net.owner}
    assert net.task.functions.node().call() == a["Node"]
    assert net.node.functions.task().call() == a["Task"]
    assert net.queue.functions.node().call() == a["Node"]
    assert net.stats.functions.task().call() == a["Task"]


def test_deploy_with_a_local_account_and_a_config(w3: Web3, tmp_path: Path):
    owner = Account.create()
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": owner.address, "value": 10 * ETHER})
    config = ContractParameters(
        node_stake_wei=ETHER, task_timeout_s=60, distance_threshold=3, kickout_threshold=10,
        queue_size_limit=7, gpt_base_ms=1_000, gpt_per_token_ms=2, response_window_s=30,
        queue_rent_bps_per_hour=0, relay_signer=owner.address,
    )  # fmt: skip
    deployment = deploy_network(w3, owner, config)
    assert deployment.owner == owner.address
    assert deployment.contract("Node").functions.nodeStake().call() == ETHER
    assert deployment.contract("Node").functions.owner().call() == owner.address
    assert deployment.contract("Task").functions.taskTimeout().call() == 60
    assert deployment.contract("Task").functions.distanceThreshold().call() == 3
    assert deployment.contract("QoS").functions.kickoutThreshold().call() == 10
    assert deployment.contract("TaskQueue").functions.sizeLimit().call() == 7
    assert deployment.contract("TaskQueue").functions.estimatedMs(TaskType.GPT, 10).call() == 1_020
    assert deployment.contract("TaskQueue").functions.estimatedMs(TaskType.SD, 1).call() == 50_000
    assert deployment.contract("Task").functions.responseWindow().call() == 30
    assert deployment.contract("Task").functions.queueRentBpsPerHour().call() == 0
    assert deployment.contract("Task").functions.relaySigner().call() == owner.address

    path = tmp_path / "devnet" / "deployment.json"
    deployment.save(path)
    loaded = Deployment.load(path, w3)
    assert loaded == deployment
    assert loaded.contract("Task").address == deployment.address("Task")
    assert Deployment.load(path).w3 is None
    with pytest.raises(RuntimeError, match="bind"):
        Deployment.load(path).contract("Task")
    data = json.loads(path.read_text())
    data["chain_id"] = 1
    with pytest.raises(ValueError, match="chain 1"):
        Deployment.from_json(json.dumps(data), w3)
    del data["addresses"]["QoS"]
    with pytest.raises(ValueError, match="QoS"):
        Deployment.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "kwargs",
    [{"node_stake_wei": 0}, {"task_timeout_s": 0}, {"distance_threshold": 65}, {"kickout_threshold": 60},
     {"queue_size_limit": 0}, {"sd_base_ms": 0}, {"response_window_s": 0}, {"response_window_s": 2**32},
     {"queue_rent_bps_per_hour": 100_001}],
)  # fmt: skip
def test_network_config_rejects_values_the_contracts_would_refuse(kwargs):
    with pytest.raises(ValueError):
        ContractParameters(**kwargs)


def test_the_stake_bound_is_the_contract_s(w3: Web3):
    """Issue 25, finding 5: Node keeps stakes in 96 bits; deploy.py allowed 2**128 - 1."""
    largest = 2**96 - 1
    with pytest.raises(ValueError, match=r"2\*\*96"):
        ContractParameters(node_stake_wei=largest + 1)
    owner = w3.eth.accounts[0]
    deployment = deploy_network(w3, owner, ContractParameters(node_stake_wei=largest))
    node = deployment.contract("Node")
    assert node.functions.nodeStake().call() == largest
    with pytest.raises(ContractLogicError):
        node.functions.setNodeStake(largest + 1).call({"from": owner})
