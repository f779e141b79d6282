"""What the relay tests on a real chain share: the accounts, a task's steps on chain, the statistics as the
contract and as a relay see them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
from eth_account import Account
from eth_utils import to_checksum_address

from cluster.chain.anvil import DEV_MNEMONIC
from cluster.chain.contracts import NodeStatus, TaskType
from cluster.protocol.hashes import task_hash
from cluster.protocol.task import parse_task_args, task_cap
from cluster.relay import RelayClient
from network.relay.config import RelayConfig

Account.enable_unaudited_hdwallet_features()
DEV = [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(12)]
CREATOR, NODES, OUTSIDER = DEV[10], DEV[1:4], DEV[11]
ARGS = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "seed": 3}'
RESPONSE = b'{"model": "tiny", "choices": [], "usage": {}}'
ARGS_CAP = 256  # ARGS asks for the default max_new_tokens: the cap its task must declare


def eventually(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """The first truthy value of ``check``: polled on state, with a generous bound for a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def relay_config(anvil, deployment, data_dir, database_url: str | None) -> RelayConfig:
    return RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=data_dir, port=0,
        node_address=deployment.address("Node"), start_block=deployment.block_number,
        poll_interval_s=0.05, database_url=database_url,
    )  # fmt: skip


def client(relay_url: str, account) -> RelayClient:
    return RelayClient(relay_url, account, backoff_s=0.05, max_backoff_s=0.2)


def create_gpt_task(net, args: str = ARGS, cap: int | None = None) -> int:
    """Joins the three nodes and creates the task; its cap is what the arguments ask for unless given."""
    net.join_all([n.address for n in NODES])
    cap = task_cap(parse_task_args(TaskType.GPT, args)) if cap is None else cap
    assert args != ARGS or cap == ARGS_CAP
    task_id, _ = net.create_task(CREATOR.address, TaskType.GPT, task_hash=task_hash(args), cap=cap)
    return task_id


def succeed(net, task_id: int) -> str:
    """All three nodes commit and disclose the same result; returns the result node."""
    result = hashlib.sha256(RESPONSE).digest()
    receipts = net.run(task_id, [result] * 3)
    (success,) = [a for r in receipts for a in net.event_args(r, "TaskSuccess")]
    return success["resultNode"]


def by_address(address: str):
    return next(a for a in DEV if a.address == address)


def network_as_relay_sees_it(relay_url: str, head: int) -> dict[str, Any]:
    """The relay's statistics once its follower has read up to block ``head``."""

    def read() -> dict[str, Any] | None:
        counters = httpx.get(f"{relay_url}/v1/network").json()["data"]
        return counters if (counters["as_of_block"] or -1) >= head else None

    counters = eventually(read)
    page = httpx.get(f"{relay_url}/v1/network/nodes", params={"limit": 100}).json()["data"]
    return {
        "nodes": list(counters["nodes"].values()),
        "tasks": list(counters["tasks"].values()),
        "known": [
            (n["address"], n["gpu_name"], n["gpu_vram_gb"], n["runtime"], n["status"]) for n in page["nodes"]
        ],
    }


def network_as_contract_sees_it(net) -> dict[str, Any]:
    known = net.view(net.stats, "getNodes", 0, net.view(net.stats, "numKnownNodes"))
    return {
        "nodes": list(net.view(net.stats, "nodeCounters")),
        "tasks": list(net.view(net.stats, "taskCounters")),
        "known": [
            (to_checksum_address(n[0]), n[1], n[2], n[3], NodeStatus(n[4]).name.lower()) for n in known
        ],
    }
