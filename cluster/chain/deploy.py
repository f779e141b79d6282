"""Deploys the network's five contracts, wires them together and applies the owner's settings.

Wiring (set once, by the owner, right after deployment):

- Task: the entry point of applications and nodes at work; holds the fees. Calls Node (select, finish,
  slash), QoS (record, reset), TaskQueue (push, pop, remove) and NetworkStats (task phases).
- Node: the entry point of nodes joining/pausing/resuming/quitting; holds the stakes. Calls Task back
  (``onNodeJoined`` / ``onNodesAvailable``, with the node's VRAM) after a join or resume, reads QoS
  weights, reports joins to NetworkStats.
- TaskQueue, QoS, NetworkStats hold no funds and accept writes only from Task (and Node for statuses).

``Deployment`` is what other processes need to reach the contracts: chain id and addresses, saved as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from cluster.chain.artifacts import NETWORK_CONTRACTS, load_artifact
from cluster.chain.contracts import (
    DEFAULT_DISTANCE_THRESHOLD,
    DEFAULT_KICKOUT_THRESHOLD,
    DEFAULT_NODE_STAKE_WEI,
    DEFAULT_PRICE_ESTIMATES_MS,
    DEFAULT_QUEUE_RENT_BPS_PER_HOUR,
    DEFAULT_QUEUE_SIZE_LIMIT,
    DEFAULT_RESPONSE_WINDOW_S,
    DEFAULT_TASK_TIMEOUT_S,
    MAX_NODE_STAKE_WEI,
    TaskType,
)

DEPLOYMENT_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ContractParameters:
    """The owner-settable numbers of the contracts; the defaults are PROTOCOL.md's."""

    node_stake_wei: int = DEFAULT_NODE_STAKE_WEI
    task_timeout_s: int = DEFAULT_TASK_TIMEOUT_S
    distance_threshold: int = DEFAULT_DISTANCE_THRESHOLD  # SD: max Hamming distance per image is this - 1
    kickout_threshold: int = DEFAULT_KICKOUT_THRESHOLD  # kick out when the last 3 task scores sum <= this
    queue_size_limit: int = DEFAULT_QUEUE_SIZE_LIMIT
    sd_base_ms: int = DEFAULT_PRICE_ESTIMATES_MS[TaskType.SD][0]
    sd_per_image_ms: int = DEFAULT_PRICE_ESTIMATES_MS[TaskType.SD][1]
    gpt_base_ms: int = DEFAULT_PRICE_ESTIMATES_MS[TaskType.GPT][0]
    gpt_per_token_ms: int = DEFAULT_PRICE_ESTIMATES_MS[TaskType.GPT][1]
    response_window_s: int = DEFAULT_RESPONSE_WINDOW_S
    queue_rent_bps_per_hour: int = DEFAULT_QUEUE_RENT_BPS_PER_HOUR
    # the relay's receipt-signing address (RelayConfig.receipt_key); None: no receipt refutes a report
    relay_signer: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.node_stake_wei <= MAX_NODE_STAKE_WEI:
            raise ValueError(f"node_stake_wei must be in 1..2**96-1, got {self.node_stake_wei}")
        if not 0 < self.task_timeout_s < 2**32:
            raise ValueError(f"task_timeout_s must be in 1..2**32-1, got {self.task_timeout_s}")
        if not 0 < self.response_window_s < 2**32:
            raise ValueError(f"response_window_s must be in 1..2**32-1, got {self.response_window_s}")
        if not 0 <= self.queue_rent_bps_per_hour <= 100_000:
            raise ValueError(f"queue_rent_bps_per_hour must be <= 100000, got {self.queue_rent_bps_per_hour}")
        if not 1 <= self.distance_threshold <= 64:
            raise ValueError(f"distance_threshold must be in 1..64, got {self.distance_threshold}")
        if not 0 <= self.kickout_threshold < 60:
            raise ValueError(f"kickout_threshold must be in 0..59, got {self.kickout_threshold}")
        if self.queue_size_limit < 1:
            raise ValueError(f"queue_size_limit must be >= 1, got {self.queue_size_limit}")
        if (
            self.sd_base_ms < 1
            or self.gpt_base_ms < 1
            or self.sd_per_image_ms < 0
            or self.gpt_per_token_ms < 0
        ):
            raise ValueError("price estimates: base_ms must be >= 1 and per-unit ms >= 0")


@dataclass(frozen=True)
class Deployment:
    """Where the network's contracts live. ``w3`` (optional, not saved) binds ``contract(name)``."""

    chain_id: int
    owner: str
    addresses: Mapping[str, str]  # contract name -> checksum address
    block_number: int  # the block of the last deployment transaction: event readers start here
    w3: Web3 | None = field(default=None, compare=False, repr=False)

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise KeyError(f"no contract {name!r} in this deployment: {', '.join(self.addresses)}") from None

    def contract(self, name: str) -> Contract:
        if self.w3 is None:
            raise RuntimeError("this Deployment has no Web3: use deployment.bind(w3).contract(name)")
        return self.w3.eth.contract(address=self.address(name), abi=load_artifact(name).abi)

    def bind(self, w3: Web3) -> Deployment:
        """The same deployment on ``w3``; refuses a Web3 connected to another chain."""
        if w3.eth.chain_id != self.chain_id:
            raise ValueError(
                f"deployment is on chain {self.chain_id}, the Web3 is on chain {w3.eth.chain_id}"
            )
        return replace(self, w3=w3)

    def to_json(self) -> str:
        data = {
            "format": DEPLOYMENT_FORMAT_VERSION,
            "chain_id": self.chain_id,
            "owner": self.owner,
            "block_number": self.block_number,
            "addresses": dict(sorted(self.addresses.items())),
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, w3: Web3 | None = None) -> Deployment:
        data = json.loads(text)
        if data.get("format") != DEPLOYMENT_FORMAT_VERSION:
            raise ValueError(f"unsupported deployment format {data.get('format')!r}")
        missing = set(NETWORK_CONTRACTS) - set(data["addresses"])
        if missing:
            raise ValueError(f"deployment lacks the addresses of {', '.join(sorted(missing))}")
        deployment = cls(
            chain_id=int(data["chain_id"]),
            owner=to_checksum_address(data["owner"]),
            addresses={name: to_checksum_address(addr) for name, addr in data["addresses"].items()},
            block_number=int(data["block_number"]),
        )
        return deployment.bind(w3) if w3 is not None else deployment

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, path: str | Path, w3: Web3 | None = None) -> Deployment:
        return cls.from_json(Path(path).read_text(encoding="utf-8"), w3)


class _OwnerTransactor:
    """Sends the owner's transactions: through the node's unlocked account or signed locally."""

    def __init__(self, w3: Web3, owner: str | LocalAccount):
        self.w3 = w3
        self.account = owner if isinstance(owner, LocalAccount) else None
        self.address = to_checksum_address(owner.address if isinstance(owner, LocalAccount) else owner)
        self._nonce = w3.eth.get_transaction_count(self.address, "pending") if self.account else None
        self.last_block = 0

    def send(self, call: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"from": self.address}
        if self.account is None:
            tx_hash = call.transact(params)
        else:
            params["nonce"] = self._nonce
            signed = self.account.sign_transaction(call.build_transaction(params))
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            self._nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"owner transaction {tx_hash.hex()} reverted")
        self.last_block = max(self.last_block, receipt["blockNumber"])
        return receipt


def deploy_network(
    w3: Web3, owner: str | LocalAccount, config: ContractParameters | None = None
) -> Deployment:
    """Deploys Node, Task, TaskQueue, QoS and NetworkStats owned by ``owner``, wires them, applies ``config``.

    ``owner`` is an address the node signs for (anvil's dev accounts) or a local account. The owner is
    also the treasury that receives slashed stakes.
    """
    config = config or ContractParameters()
    tx = _OwnerTransactor(w3, owner)
    addresses: dict[str, str] = {}
    for name in NETWORK_CONTRACTS:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        addresses[name] = to_checksum_address(tx.send(factory.constructor(tx.address))["contractAddress"])
    deployment = Deployment(
        chain_id=w3.eth.chain_id, owner=tx.address, addresses=addresses, block_number=0, w3=w3
    )
    node, task, queue, qos, stats = (deployment.contract(name) for name in NETWORK_CONTRACTS)
    a = addresses
    tx.send(node.functions.wire(a["Task"], a["QoS"], a["NetworkStats"]))
    tx.send(task.functions.wire(a["Node"], a["QoS"], a["TaskQueue"]))
    tx.send(queue.functions.wire(a["Task"], a["Node"]))
    tx.send(qos.functions.wire(a["Task"]))
    tx.send(stats.functions.wire(a["Node"], a["Task"]))
    _apply_parameters(tx, deployment, config)
    return replace(deployment, block_number=tx.last_block)


def _apply_parameters(tx: _OwnerTransactor, deployment: Deployment, config: ContractParameters) -> None:
    """Sends a setter only for the numbers that differ from the contracts' defaults."""
    defaults = ContractParameters()
    node, task, queue, qos = (deployment.contract(n) for n in ("Node", "Task", "TaskQueue", "QoS"))
    if config.node_stake_wei != defaults.node_stake_wei:
        tx.send(node.functions.setNodeStake(config.node_stake_wei))
    if config.task_timeout_s != defaults.task_timeout_s:
        tx.send(task.functions.setTaskTimeout(config.task_timeout_s))
    if config.response_window_s != defaults.response_window_s:
        tx.send(task.functions.setResponseWindow(config.response_window_s))
    if config.queue_rent_bps_per_hour != defaults.queue_rent_bps_per_hour:
        tx.send(task.functions.setQueueRent(config.queue_rent_bps_per_hour))
    if config.relay_signer is not None:
        tx.send(task.functions.setRelaySigner(to_checksum_address(config.relay_signer)))
    if config.distance_threshold != defaults.distance_threshold:
        tx.send(task.functions.setDistanceThreshold(config.distance_threshold))
    if config.kickout_threshold != defaults.kickout_threshold:
        tx.send(qos.functions.setKickoutThreshold(config.kickout_threshold))
    if config.queue_size_limit != defaults.queue_size_limit:
        tx.send(queue.functions.setSizeLimit(config.queue_size_limit))
    if (config.sd_base_ms, config.sd_per_image_ms) != (defaults.sd_base_ms, defaults.sd_per_image_ms):
        tx.send(queue.functions.setPriceEstimate(TaskType.SD, config.sd_base_ms, config.sd_per_image_ms))
    if (config.gpt_base_ms, config.gpt_per_token_ms) != (defaults.gpt_base_ms, defaults.gpt_per_token_ms):
        tx.send(queue.functions.setPriceEstimate(TaskType.GPT, config.gpt_base_ms, config.gpt_per_token_ms))
