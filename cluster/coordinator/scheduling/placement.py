"""Which workers a farm has and how Ray places them, grouped by the card model they join with.

A worker owns one GPU, several GPUs of one node (``rig.worker_layouts``: a ``kx`` card model), or a
share of one GPU (``rig.gpu_sharing=replicas``); in batched mode one worker runs ``rig.places_per_gpu``
tasks at once.

Workers are named by card model, machine and their place there (``helium-worker-<card>-<node>-<i>``, the
node's id cut to 8 hex digits), so a restarted coordinator finds the same actors again, and a machine
that joins or leaves never renames another's. A worker is pinned to its machine: it dies with it, and its
jobs run again on the card model's other workers.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.config import EngineConfig, RigConfig
from cluster.protocol.cards import CardModel
from cluster.workers.engines import parallel_tag, runtime_tag_of
from cluster.workers.gpu import virtual_gpus

WORKER_NAME_PREFIX = "helium-worker-"
# Ray restarts a crashed worker process in place this many times; past that the pool replaces it.
WORKER_MAX_RESTARTS = 2
# Calls beyond the job places: info() and loaded_models() answer while jobs run.
NUM_CONTROL_CALLS = 2


class PoolError(RuntimeError):
    """The farm's workers cannot be planned or placed; the message names what to change."""


@dataclass(frozen=True, slots=True)
class WorkerPlacement:
    index: int  # global, in discovery order
    group_index: int  # place within its card model's group
    card: CardModel  # the card model the worker's node accounts join with
    gpu: CardModel | None = None  # the card model of each GPU it uses (its Ray resource); None: ``card``
    num_gpus: int = 1  # GPUs it owns: > 1 for a model larger than one GPU
    num_replicas: int = 1  # workers sharing its one GPU (rig.gpu_sharing=replicas)
    num_places: int = 1  # tasks it runs at once (rig.gpu_sharing=batched: rig.places_per_gpu)
    node_id: str = ""  # the Ray node (machine) it is pinned to; "" where Ray places it

    @property
    def name(self) -> str:
        machine = f"{self.node_id[:8]}-" if self.node_id else ""
        return f"{WORKER_NAME_PREFIX}{self.card.short_id}-{machine}{self.group_index}"

    @property
    def gpu_card(self) -> CardModel:
        return self.gpu or self.card

    @property
    def gpu_share(self) -> float:
        """What it asks Ray for, in GPUs (and units of the card resource): whole GPUs, or a fraction."""
        return self.num_gpus / self.num_replicas


def plan_slots(cards: Iterable[CardModel]) -> list[WorkerPlacement]:
    """One worker per GPU with one task place, numbered globally and within its card model."""
    return _numbered([(card, card, 1, 1, 1) for card in cards])


def plan_workers(
    nodes: Sequence[Sequence[CardModel]], rig: RigConfig, engine: EngineConfig
) -> list[WorkerPlacement]:
    """The farm's workers: per Ray node (each a list of its GPUs' card models), its GPUs split into workers
    by ``rig.worker_layouts`` and their places by ``rig.gpu_sharing``; a bad combination names the option."""
    check_gpu_sharing(rig, engine)
    layouts = {layout.card_name: layout.gpus_per_worker for layout in rig.worker_layouts}
    tag = parallel_tag(engine.text)
    is_batched = rig.gpu_sharing == "batched"
    specs = []  # (worker card, gpu card, num_gpus, num_replicas, num_places)
    for node_index, gpus in enumerate(nodes):
        for gpu, count in Counter(gpus).items():  # card models in order of first appearance
            split = layouts.get(gpu.gpu_name, [1] * count)
            if sum(split) != count:
                raise PoolError(
                    f"rig.worker_layouts splits {sum(split)} GPUs of {gpu.gpu_name!r} ({split}) but Ray node "
                    f"{node_index} has {count}: change rig.worker_layouts so that it covers {count} GPUs"
                )
            for num_gpus in split:
                if num_gpus > 1 and not is_batched and rig.places_per_gpu > 1:
                    raise PoolError(
                        f"rig.worker_layouts gives a worker {num_gpus} GPUs of {gpu.gpu_name!r}, and "
                        f"rig.places_per_gpu={rig.places_per_gpu} replicas cannot share several GPUs: set "
                        "rig.gpu_sharing=batched, or rig.places_per_gpu=1"
                    )
                replicas = 1 if is_batched or num_gpus > 1 else rig.places_per_gpu
                places = rig.places_per_gpu if is_batched else 1
                card = gpu.of_worker(num_gpus, tag, replicas)
                specs += [(card, gpu, num_gpus, replicas, places)] * replicas
    return _numbered(specs)


def plan_machine(
    node_id: str, gpus: Sequence[CardModel], rig: RigConfig, engine: EngineConfig, *, first_index: int = 0
) -> list[WorkerPlacement]:
    """One machine's workers (``plan_workers`` for its GPUs), pinned to it; numbered from ``first_index``
    across the farm, and within the machine per card model."""
    return [
        dataclasses.replace(placement, node_id=node_id, index=first_index + placement.index)
        for placement in plan_workers([gpus], rig, engine)
    ]


def _numbered(specs: Iterable[tuple[CardModel, CardModel, int, int, int]]) -> list[WorkerPlacement]:
    num_in_group: Counter[CardModel] = Counter()
    placements = []
    for index, (card, gpu, num_gpus, num_replicas, num_places) in enumerate(specs):
        placements.append(
            WorkerPlacement(index, num_in_group[card], card, gpu, num_gpus, num_replicas, num_places)
        )
        num_in_group[card] += 1
    return placements


def check_gpu_sharing(rig: RigConfig, engine: EngineConfig) -> None:
    if rig.gpu_sharing == "batched" and engine.text != "vllm":
        raise PoolError(
            "rig.gpu_sharing=batched batches GPT requests in vLLM's async engine: set engine.text=vllm, or "
            "rig.gpu_sharing=replicas (each task alone on its own engine)"
        )


def virtual_cards(rig: RigConfig, engine: EngineConfig) -> list[CardModel]:
    runtime = runtime_tag_of(engine)
    tags = [group.runtime_tag or runtime for group in rig.virtual_gpus for _ in range(group.count)]
    return [spec.card_model(tag) for spec, tag in zip(virtual_gpus(rig), tags, strict=True)]


def virtual_workers(rig: RigConfig, engine: EngineConfig) -> list[WorkerPlacement]:
    """A rig of virtual GPUs's workers: its virtual GPUs are one Ray node's."""
    return plan_workers([virtual_cards(rig, engine)], rig, engine)


def required_resources(placements: Iterable[WorkerPlacement]) -> dict[str, float]:
    """Units of each card resource the workers take together (one per GPU, shared or not)."""
    counts: dict[str, float] = {}
    for placement in placements:
        name = placement.gpu_card.resource_name
        counts[name] = counts.get(name, 0.0) + placement.gpu_share
    # NOTE: replicas take 1/n each; rounding keeps n * (1/n) from reading as 0.9999999 GPUs.
    return {name: round(count, 6) for name, count in sorted(counts.items())}


def rig_ray_resources(rig: RigConfig, engine: EngineConfig) -> dict[str, float]:
    """What ``ray.init(resources=...)`` declares on the one machine of a rig of virtual GPUs (the devnet):
    one unit of its card resource per virtual GPU, however the GPUs are split into workers."""
    return required_resources(plan_slots(virtual_cards(rig, engine)))


def check_cluster_resources(placements: list[WorkerPlacement], total: dict[str, float]) -> None:
    """Fail now, naming the declaration to add, rather than leave workers pending forever."""
    needed = required_resources(placements)
    missing = {name: count for name, count in needed.items() if total.get(name, 0.0) < count}
    if not missing:
        return
    cards = {placement.gpu_card.resource_name: placement.gpu_card for placement in placements}
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


def check_node_capacity(placements: list[WorkerPlacement], node_resources: list[dict[str, float]]) -> None:
    """A worker lives on one Ray node: each needs a node that holds all of its GPUs."""
    for placement in placements:
        name = placement.gpu_card.resource_name
        largest = max((resources.get(name, 0.0) for resources in node_resources), default=0.0)
        if largest < placement.gpu_share:
            gpu_name = placement.gpu_card.gpu_name
            raise PoolError(
                f"worker {placement.name} needs {placement.num_gpus} GPUs of {gpu_name!r} on one Ray node "
                f"but the largest node holds {largest:g} ({name}): change rig.worker_layouts so that no "
                "worker has more GPUs than one node"
            )


def actor_options(placement: WorkerPlacement, rig: RigConfig, namespace: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": placement.name,
        "namespace": namespace,
        "get_if_exists": True,  # a restarted coordinator reuses the running workers and their warm models
        "lifetime": "detached",  # workers outlive the coordinator's process; WorkerPool.shutdown kills them
        # CPU is not what limits a worker, its GPU is: placement comes from the card resource (and GPU).
        "num_cpus": 0,
        "resources": {placement.gpu_card.resource_name: placement.gpu_share},
        "max_restarts": WORKER_MAX_RESTARTS,
        "max_task_retries": 0,  # the pool decides where a failed job runs next
        "max_concurrency": placement.num_places + NUM_CONTROL_CALLS,
    }
    if rig.device == "cuda":
        options["num_gpus"] = placement.gpu_share  # whole GPUs on one node, or a replica's fraction of one
    if placement.node_id:  # on its machine or nowhere: a worker never moves to another machine's GPUs
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placement.node_id, soft=False)
    return options
