"""Workers of several GPUs on the real chain: the node accounts a rig's layout derives join with the
``2x`` card model, and the contracts select only them for a task that one GPU cannot hold.

The rig is planned as the pool plans it (no Ray: the card models come from ``plan_workers``); the
joins, the selection and the card model keys are the real contracts' on anvil.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.chain.contracts import TaskType
from cluster.config import EngineConfig, RigConfig, VirtualGpus, WorkerLayout
from cluster.coordinator.scheduling.placement import virtual_workers
from cluster.protocol.hashes import task_hash
from tests.coordinator.factories import APP, gpt_args, running_coordinator, settings
from tests.coordinator.local_runner import LocalJobRunner

CARD_NAME = "Layout Virtual Card"
RIG = RigConfig(
    name="layouts", device="cpu", discover_gpus=False, places_per_gpu=3, gpu_sharing="batched",
    virtual_gpus=[VirtualGpus(card_name=CARD_NAME, vram_gb=8, count=4)],
    worker_layouts=[WorkerLayout(card_name=CARD_NAME, gpus_per_worker=[1, 1, 2])],
    model_cache_dir="/nonexistent", vram_budget_fraction=0.5,
)  # fmt: skip
ENGINE = EngineConfig(text="vllm", image="diffusers", deterministic=True, runtime_tag="vllm-layout-test")


def node_places() -> list[Any]:
    """One card model per node account: every worker's places (here 3 per worker, batched)."""
    return [slot.card for slot in virtual_workers(RIG, ENGINE) for _ in range(slot.num_places)]


def node_info(node_contract: Any, address: str) -> dict[str, Any]:
    (outputs,) = node_contract.get_function_by_name("nodeInfo").abi["outputs"]
    names = [component["name"] for component in outputs["components"]]
    return dict(zip(names, node_contract.functions.nodeInfo(address).call(), strict=True))


def create_task(w3: Any, deployment: Any, args: str, vram_limit: int) -> int:
    task = deployment.bind(w3).contract("Task")
    tx = task.functions.createTask(int(TaskType.GPT), task_hash(args), b"\0" * 32, vram_limit, 6).transact(
        {"from": APP.address, "value": 10**18}
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    return task.events.TaskPending().process_receipt(receipt)[0]["args"]["taskId"]


def test_a_2x_worker_joins_as_its_own_card_model_and_takes_what_one_gpu_cannot_hold(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    cards = node_places()
    one_gpu, two_gpus = sorted(set(cards), key=lambda card: card.vram_gb)
    assert (two_gpus.gpu_name, two_gpus.vram_gb, two_gpus.runtime) == (
        f"2x {CARD_NAME}", 16, "vllm-layout-test-tp2",
    )  # fmt: skip
    assert (one_gpu.gpu_name, one_gpu.vram_gb) == (CARD_NAME, 8) and one_gpu.key != two_gpus.key
    assert cards.count(one_gpu) == 6 and cards.count(two_gpus) == 3

    async def join() -> dict[str, Any]:
        config = settings(anvil, deployment, relay, tmp_path, cards=cards)
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path), join=False) as coordinator:
            return await coordinator.join_nodes()

    statuses = asyncio.run(join())
    node = deployment.bind(w3).contract("Node")
    joined = {address: node_info(node, address) for address in statuses}
    by_key = {info["cardModelKey"]: (info["gpuName"], info["gpuVramGB"]) for info in joined.values()}
    assert by_key == {one_gpu.key: (CARD_NAME, 8), two_gpus.key: (f"2x {CARD_NAME}", 16)}

    # 12 GB: more than one GPU holds, so only the 2x nodes can take it; 0 GB: either group, never mixed.
    big = create_task(w3, deployment, gpt_args(tiny_lm_dir, seed=1), vram_limit=12)
    small = create_task(w3, deployment, gpt_args(tiny_lm_dir, seed=2), vram_limit=0)
    started = (
        deployment.bind(w3).contract("Task").events.TaskStarted().get_logs(from_block=deployment.block_number)
    )
    selected: dict[int, list[str]] = {}
    for event in started:
        selected.setdefault(event["args"]["taskId"], []).append(event["args"]["selectedNode"])
    assert len(selected[big]) == 3 and {joined[n]["cardModelKey"] for n in selected[big]} == {two_gpus.key}
    assert len(selected[small]) == 3 and len({joined[n]["cardModelKey"] for n in selected[small]}) == 1
