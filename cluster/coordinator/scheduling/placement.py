"""Which workers a farm has and how Ray places them: one slot per GPU, grouped by card model.

Workers are named by card model and their place in its group (``helium-worker-<card>-<i>``), so a
restarted coordinator finds the same actors again, and adding a card model never renames another's.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import EngineConfig, RigConfig
from cluster.protocol.cards import CardModel
from cluster.workers.engines import runtime_tag_of
from cluster.workers.gpu import discover_nvml_gpus, virtual_gpus

WORKER_NAME_PREFIX = "helium-worker-"
# Ray restarts a crashed worker process in place this many times; past that the pool replaces it.
WORKER_MAX_RESTARTS = 2
# Calls beyond the job slots: info() and loaded_models() answer while jobs run.
NUM_CONTROL_CALLS = 2


class PoolError(RuntimeError):
    """The farm's workers cannot be planned or placed; the message names what to change."""


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    index: int  # global, in discovery order: the index TestHooks.corrupt_workers names
    group_index: int  # place within its card model's group
    card: CardModel

    @property
    def name(self) -> str:
        return f"{WORKER_NAME_PREFIX}{self.card.short_id}-{self.group_index}"


def plan_slots(cards: Iterable[CardModel]) -> list[WorkerSlot]:
    """One slot per GPU, numbered globally and within its card model."""
    num_in_group: Counter[CardModel] = Counter()
    slots = []
    for index, card in enumerate(cards):
        slots.append(WorkerSlot(index, num_in_group[card], card))
        num_in_group[card] += 1
    return slots


def virtual_cards(rig: RigConfig, engine: EngineConfig) -> list[CardModel]:
    runtime = runtime_tag_of(engine)
    return [spec.card_model(runtime) for spec in virtual_gpus(rig)]


@ray.remote(num_cpus=0)
def _discover_node(engine: EngineConfig, num_gpus: int) -> list[CardModel]:
    # Runs on the GPU node itself: NVML sees only local GPUs, and the runtime tag is that node's software.
    runtime = runtime_tag_of(engine)
    return [spec.card_model(runtime) for spec in discover_nvml_gpus()[:num_gpus]]


async def discovered_cards(engine: EngineConfig) -> list[CardModel]:
    """The card model of every GPU that the alive Ray nodes offer, node by node in address order."""
    nodes = sorted(
        (node for node in ray.nodes() if node["Alive"] and node["Resources"].get("GPU", 0) >= 1),
        key=lambda node: (node["NodeManagerAddress"], node["NodeID"]),
    )
    if not nodes:
        raise PoolError(
            "rig.discover_gpus is true but no alive Ray node offers a GPU; "
            "start the GPU nodes first, or use a rig with virtual_slots (rig=cpu-devnet)"
        )
    refs = [
        _discover_node.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(engine, int(node["Resources"]["GPU"]))  # a node may offer Ray fewer GPUs than it has
        for node in nodes
    ]
    per_node = await asyncio.gather(*refs)
    return [card for cards in per_node for card in cards]


def required_resources(slots: Iterable[WorkerSlot]) -> dict[str, float]:
    counts = Counter(slot.card.resource_name for slot in slots)
    return {name: float(count) for name, count in sorted(counts.items())}


def rig_ray_resources(rig: RigConfig, engine: EngineConfig) -> dict[str, float]:
    """What ``ray.init(resources=...)`` declares on the one machine of a virtual-slot rig (the devnet)."""
    return required_resources(plan_slots(virtual_cards(rig, engine)))


def check_cluster_resources(slots: list[WorkerSlot], total: dict[str, float]) -> None:
    """Fail now, naming the declaration to add, rather than leave workers pending forever."""
    needed = required_resources(slots)
    missing = {name: count for name, count in needed.items() if total.get(name, 0.0) < count}
    if not missing:
        return
    cards = {slot.card.resource_name: slot.card for slot in slots}
    described = ", ".join(
        f"{name} ({cards[name].gpu_name}, {cards[name].vram_gb} GB, {cards[name].runtime}): "
        f"needs {count:g}, cluster has {total.get(name, 0.0):g}"
        for name, count in missing.items()
    )
    raise PoolError(
        f"the Ray cluster lacks card model resources: {described}. Declare them where the GPUs are: "
        f"ray.init(resources={json.dumps(needed)}) on one machine, or `ray start --resources` with what "
        "`python -m cluster.workers.gpu` prints on each GPU node"
    )


def actor_options(slot: WorkerSlot, rig: RigConfig, namespace: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": slot.name,
        "namespace": namespace,
        "get_if_exists": True,  # a restarted coordinator reuses the running workers and their warm models
        "lifetime": "detached",  # workers outlive the coordinator's process; WorkerPool.shutdown kills them
        # CPU is not what limits a worker, its GPU is: placement comes from the card resource (and GPU).
        "num_cpus": 0,
        "resources": {slot.card.resource_name: 1},
        "max_restarts": WORKER_MAX_RESTARTS,
        "max_task_retries": 0,  # the pool decides where a failed job runs next
        "max_concurrency": rig.slots_per_gpu + NUM_CONTROL_CALLS,
    }
    if rig.device == "cuda":
        options["num_gpus"] = 1
    return options
