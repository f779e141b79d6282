"""A farm of several machines on this host: a Ray head and one real raylet per simulated machine
(``ray.cluster_utils.Cluster``), each machine declaring virtual GPUs as card resources, and the
coordinator's service (the actor's code, in this process) on a loop of its own, against the local chain
and relay. Used by tests/farm and benchmarks/farm_drills.py.

Ray's health checks are made fast (a dead raylet is found in about 2 s, not Ray's default 15 s) through
the head's ``_system_config``, as Ray's own tests do.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from hydra import compose, initialize_config_dir

from cluster.config import ChainEndpoints, ClusterConfig, load_config
from cluster.protocol.cards import CardModel

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
CARD_A = "Devnet Virtual Card A"
CARD_B = "Devnet Virtual Card B"
UPGRADED = "devnet-upgraded"  # the runtime tag of card A's GPUs on machines rolled to a new version
HEALTH_CHECKS = {  # a dead raylet is found after period x threshold (+ the timeout): about 2 s
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}
MNEMONIC_ENV = "HELIUM_OPERATOR_MNEMONIC"


def farm_config(state_dir: Path, cache_dir: Path, *overrides: str) -> ClusterConfig:
    """The cpu-devnet rig with its two virtual card models, and card A on an upgraded runtime (one GPU
    each: which machine has how many is what each machine declares), no metrics port."""
    gpus = (f"{{card_name:'{CARD_A}',vram_gb:8,count:1}},{{card_name:'{CARD_B}',vram_gb:16,count:1}},"
            f"{{card_name:'{CARD_A}',vram_gb:8,count:1,runtime_tag:{UPGRADED}}}")  # fmt: skip
    base = [
        "rig=cpu-devnet",
        f"rig.virtual_gpus=[{gpus}]",
        f"state_dir={state_dir}", f"rig.model_cache_dir={cache_dir}", "metrics_port=0", "machines_poll_s=0.5",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=base + list(overrides)))


class SimulatedFarm:
    def __init__(self, config: ClusterConfig, endpoints: ChainEndpoints, mnemonic: str):
        self.config = config
        self.endpoints = endpoints
        self.mnemonic = mnemonic
        self.machines: dict[str, Any] = {}  # Ray node id -> the raylet (ray._private.node.Node)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="farm-loop")

    def card(self, key: str) -> CardModel:
        """The card model of "a", "b" or "a_new" (card A on the upgraded runtime)."""
        from cluster.coordinator.scheduling.placement import virtual_cards

        a, b, a_new = virtual_cards(self.config.rig, self.config.engine)
        return {"a": a, "b": b, "a_new": a_new}[key]

    def start_ray(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": HEALTH_CHECKS,
                            "object_store_memory": 128 * 1024**2},
        )  # fmt: skip
        env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        ray.init(address=self.cluster.address, namespace="helium", log_to_driver=False,
                 runtime_env={"env_vars": env})  # fmt: skip
        self._thread.start()

    def add_machine(self, **gpus: int) -> str:
        """A machine with ``gpus`` virtual GPUs per card key ("a", "b", "a_new"); its Ray node id."""
        resources = {self.card(key).resource_name: count for key, count in gpus.items()}
        node = self.cluster.add_node(num_cpus=0, resources=resources, object_store_memory=80 * 1024**2)
        self.machines[node.node_id] = node
        return node.node_id

    def kill_machine(self, node_id: str) -> None:
        """The raylet and everything on it killed at once, as a power cut would."""
        self.cluster.remove_node(self.machines.pop(node_id), allow_graceful=False)

    def start_service(self) -> Any:
        from cluster.coordinator.actor import CoordinatorService

        os.environ[MNEMONIC_ENV] = self.mnemonic
        self.service = CoordinatorService(self.config, self.endpoints)
        self.run(self.service.ensure_started(), timeout_s=300)
        return self.service

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 300.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 120.0, what: str = "") -> float:
        """Seconds until ``condition`` held (checked on this thread); fails past ``timeout_s``."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"not within {timeout_s:g} s: {what}")
            time.sleep(0.05)
        return time.monotonic() - started

    def close(self) -> None:
        import ray

        service = getattr(self, "service", None)
        try:
            if service is not None:
                self.run(service.stop(timeout_s=10.0), timeout_s=120)
                if service.pool is not None:
                    self.run(service.pool.shutdown(), timeout_s=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            ray.shutdown()
            self.cluster.shutdown()
            os.environ.pop(MNEMONIC_ENV, None)
