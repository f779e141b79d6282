"""The farm's machines: the Ray nodes that hold GPU workers, and what state each is in.

A machine is found by its Ray node id (a restarted raylet is a new machine) and shown by its address.
Its GPUs are found where they are: NVML on the node itself (``rig.discover_gpus``), or, on a rig of
virtual GPUs, the card resources the node declares (``ray start --resources``), so that several simulated
machines on one host are told apart as real ones are.

States: SERVING (its places count), DRAINING (no new job; its running jobs finish), DRAINED (its workers
stopped: safe to remove), LOST (Ray found it dead: its places no longer count).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import ray

from cluster.atomic_files import write_file
from cluster.config import EngineConfig, RigConfig
from cluster.coordinator.scheduling.placement import virtual_cards
from cluster.protocol.cards import CardModel
from cluster.workers.engines import runtime_tag_of
from cluster.workers.gpu import discover_nvml_gpus


class MachineState(StrEnum):
    SERVING = "serving"
    DRAINING = "draining"
    DRAINED = "drained"
    LOST = "lost"


@dataclass(slots=True, eq=False)
class Machine:
    node_id: str
    address: str
    gpus: list[CardModel]  # the card model of each GPU it offers
    state: MachineState = MachineState.SERVING
    since_s: float = field(default_factory=time.time)

    def enter(self, state: MachineState) -> None:
        if state is not self.state:
            self.state, self.since_s = state, time.time()

    @property
    def is_serving(self) -> bool:
        return self.state is MachineState.SERVING

    def matches(self, text: str) -> bool:
        """Named by its address, or by its node id or a prefix of it (8 hex digits, as the status shows)."""
        text = text.strip().lower()
        return bool(text) and (text == self.address or self.node_id.lower().startswith(text))


def alive_nodes() -> dict[str, dict[str, Any]]:
    """Ray's alive nodes by node id (GCS's view: a node it found dead is no longer here)."""
    return {node["NodeID"]: node for node in ray.nodes() if node["Alive"]}


def offers_gpus(node: dict[str, Any], rig: RigConfig, engine: EngineConfig) -> bool:
    resources = node["Resources"]
    if rig.discover_gpus:
        return resources.get("GPU", 0) >= 1
    return any(resources.get(card.resource_name, 0) >= 1 for card in virtual_cards(rig, engine))


@ray.remote(num_cpus=0)
def _discover_node(engine: EngineConfig, num_gpus: int) -> list[CardModel]:
    # Runs on the GPU node itself: NVML sees only local GPUs, and the runtime tag is that node's software.
    runtime = runtime_tag_of(engine)
    return [spec.card_model(runtime) for spec in discover_nvml_gpus()[:num_gpus]]


async def node_gpus(node: dict[str, Any], rig: RigConfig, engine: EngineConfig) -> list[CardModel]:
    """The card model of each GPU the node offers Ray: NVML there, or its declared card resources."""
    if rig.discover_gpus:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        # a node may offer Ray fewer GPUs than it has
        return await _discover_node.options(scheduling_strategy=strategy).remote(
            engine, int(node["Resources"]["GPU"])
        )
    resources = node["Resources"]
    cards = dict.fromkeys(virtual_cards(rig, engine))  # each virtual card model once, in the rig's order
    return [card for card in cards for _ in range(int(resources.get(card.resource_name, 0)))]


def find_machine(machines: list[Machine], text: str) -> Machine:
    """The one machine ``text`` names (an address, a node id or its prefix); KeyError naming the farm's."""
    matching = [machine for machine in machines if machine.matches(text)]
    if len(matching) != 1:
        known = ", ".join(f"{m.address} ({m.node_id[:8]}, {m.state})" for m in machines) or "none"
        raise KeyError(f"{text!r} names {len(matching)} of this farm's machines: {known}")
    return matching[0]


class DrainedMachines:
    """The node ids the operator drained, in the state directory: a restarted coordinator starts no worker
    on them until ``undrain`` (a machine being taken out must not come back by itself)."""

    def __init__(self, path: Path):
        self.path = path

    def node_ids(self) -> set[str]:
        return set(json.loads(self.path.read_text())) if self.path.exists() else set()

    def add(self, node_id: str) -> None:
        self._write(self.node_ids() | {node_id})

    def remove(self, node_id: str) -> None:
        self._write(self.node_ids() - {node_id})

    def _write(self, node_ids: set[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file(self.path, json.dumps(sorted(node_ids)).encode())
