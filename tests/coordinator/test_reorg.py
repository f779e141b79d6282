"""A reorg above the confirmation depth: the coordinator and the relay end with the chain's final state.

The chain mines a block every 50 ms (tests/chain/mining.py) and both the coordinator and the relay act only
on events 3 blocks deep (``network.chain.confirmations``). Two reorgs hit the farm's task:
1. the block carrying the task's TaskStarted (three of the farm's nodes selected) is reorged away and
   replaced by a block where the same task id is another task (other arguments, another taskHash);
2. the block carrying its TaskSuccess (the farm's own disclosures) is reorged away, its transactions
   dropped, while it is still shallower than the confirmations.
The first release acted on events at any depth and took a mined receipt as final: it ran the vanished
task's selection and lost the dropped disclosures.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

from cluster.chain.contracts import TaskType
from cluster.coordinator.round_state import Outcome
from cluster.protocol.hashes import task_hash
from cluster.relay import RelayClient
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.chain.mining import BlockMiner
from tests.coordinator.factories import APP, CoordinatorThread, gpt_args, settings
from tests.coordinator.local_runner import LocalJobRunner

CONFIRMATIONS = 3
FEE_WEI = 10**18


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def send_create_task(task: Any, args: str) -> str:
    """createTask into the mempool (the miner decides when it is mined)."""
    call = task.functions.createTask(int(TaskType.GPT), task_hash(args), b"\0" * 32, 0, 6)
    return call.transact({"from": APP.address, "value": FEE_WEI}).to_0x_hex()


class SuccessReorger:
    """On the miner's thread: once the task's TaskSuccess is 2 blocks deep (under the 3 confirmations),
    replace those 3 blocks with empty ones, dropping the disclosures they held."""

    def __init__(self, miner_w3: Any, task: Any):
        self.task = miner_w3.eth.contract(address=task.address, abi=task.abi)
        self.task_id: int | None = None
        self.reorged_block: int | None = None
        self.miner: BlockMiner | None = None

    def __call__(self, number: int) -> None:
        if self.task_id is None or self.reorged_block is not None or number < 2:
            return
        logs = self.task.events.TaskSuccess().get_logs(from_block=number - 2, to_block=number - 2)
        if any(log["args"]["taskId"] == self.task_id for log in logs):
            assert self.miner is not None
            self.miner.reorg(3)
            self.reorged_block = number - 2


def replace_the_selection(miner: BlockMiner, task: Any, readers: list[Any], gone: str, final: str) -> int:
    """Phase 1: a block selecting the farm's nodes, polled by both, reorged away and replaced by a block
    where the same task id is another task; returns the id."""
    miner.pause()
    snapshot = miner.rpc("evm_snapshot")
    send_create_task(task, gone)
    gone_block = miner.mine()
    wait_for(lambda: min(r.head_seen for r in readers) >= gone_block, "both to poll past the block")
    miner.rpc("evm_revert", [snapshot])
    send_create_task(task, final)
    final_block = miner.mine()
    logs = task.events.TaskStarted().get_logs(from_block=final_block, to_block=final_block)
    (task_id,) = {log["args"]["taskId"] for log in logs}
    miner.resume()
    return task_id


def test_reorged_task_started_and_task_success_end_in_the_chain_s_final_state(
    w3, anvil, deployment, operator, tiny_lm_dir, tmp_path
):
    task = deployment.bind(w3).contract("Task")
    args_gone, args_final = gpt_args(tiny_lm_dir, seed=21), gpt_args(tiny_lm_dir, seed=22)
    relay_config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path / "relay", port=0,
        start_block=deployment.block_number, poll_interval_s=0.05, confirmations=CONFIRMATIONS,
    )  # fmt: skip
    miner_w3 = anvil.web3()
    reorger = SuccessReorger(miner_w3, task)
    with BlockMiner(miner_w3, on_block=reorger) as miner, RunningRelay(relay_config) as relay:
        reorger.miner = miner
        config = settings(anvil, deployment, relay, tmp_path / "farm", confirmations=CONFIRMATIONS)
        with CoordinatorThread(config, operator, LocalJobRunner(tmp_path)) as farm:
            store, readers = farm.coordinator.store, [farm.coordinator.reader, relay.service.follower]
            task_id = reorger.task_id = replace_the_selection(miner, task, readers, args_gone, args_final)
            asyncio.run(upload(relay.url, task_id, args_final))
            # Phase 2: the SuccessReorger drops its TaskSuccess; then it runs to payment.
            wait_for(lambda: {r.outcome for r in store.of_task(task_id)} == {Outcome.PAID}, "payment", 180)
            wait_for(lambda: relay.service.store.get(task_id).num_result_files == 1, "the relay's result")
            files = asyncio.run(download(relay.url, task_id))
            relay_record, rows, earned = (
                relay.service.store.get(task_id),
                store.of_task(task_id),
                store.earnings_wei(),
            )
    assert reorger.reorged_block is not None, "the TaskSuccess was never reorged"
    final_hash = task_hash(args_final)
    assert [r.task_hash for r in rows] == [final_hash] * 3 and all(r.failure is None for r in rows)
    assert relay_record.task_hash == final_hash
    assert set(relay_record.selected_nodes.values()) == {r.node for r in rows}
    success = task.events.TaskSuccess().get_logs(from_block=deployment.block_number)
    assert [e["args"]["taskId"] for e in success] == [task_id]  # one TaskSuccess on the final chain
    assert relay_record.result == bytes(success[0]["args"]["result"]) == hashlib.sha256(files[0]).digest()
    assert relay_record.result_node == success[0]["args"]["resultNode"]
    uploaded = task.events.TaskResultUploaded().get_logs(from_block=deployment.block_number)
    assert [e["args"]["taskId"] for e in uploaded] == [task_id]
    assert task.events.TaskNodeSlashed().get_logs(from_block=deployment.block_number) == []
    paid = task.events.TaskNodeSuccess().get_logs(from_block=deployment.block_number)
    assert sorted(e["args"]["node"] for e in paid) == sorted(r.node for r in rows)
    assert earned == FEE_WEI  # every share paid once, nothing doubled


async def upload(relay_url: str, task_id: int, args: str) -> None:
    async with RelayClient(relay_url, APP, backoff_s=0.05) as client:
        await client.upload_args(task_id, args, wait_s=60)


async def download(relay_url: str, task_id: int) -> list[bytes]:
    async with RelayClient(relay_url, APP, backoff_s=0.05) as client:
        return [await client.get_result(task_id, 0, wait_s=60)]
