"""The coordinator as a named, detached Ray actor that Ray restarts after a failure.

The actor owns the worker pool (get-or-create: a restarted actor finds the running workers and their warm
models) and the Coordinator loop. Every call first makes sure the loop runs, so after a restart the
driver's next status call brings it back; all state comes from the state directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import ray

from cluster.chain.accounts import OperatorKeys
from cluster.config import ClusterConfig
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings
from cluster.coordinator.metrics import FarmMetrics
from cluster.workers.guard import check_group, reference_tasks
from cluster.workers.pool import WorkerPool

log = logging.getLogger(__name__)
ACTOR_NAME = "helium-coordinator"
NAMESPACE = "helium"


class CoordinatorService:
    """What the actor does, in plain Python (the actor below only wraps it)."""

    def __init__(self, config: dict[str, Any], chain: dict[str, Any], faults: dict[int, dict] | None = None):
        self.config = ClusterConfig.model_validate(config)
        self.chain = chain  # rpc_url, addresses, start_block, relay_url, reference_model
        self.faults = faults
        self.coordinator: Coordinator | None = None
        self.pool: WorkerPool | None = None
        self.group_checks: dict[str, str] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._starting = asyncio.Lock()
        self.metrics = FarmMetrics()
        self._metrics_task: asyncio.Task[None] | None = None

    async def ensure_started(self) -> None:
        async with self._starting:
            if self._loop_task is not None and not self._loop_task.done():
                return
            if self.pool is None:
                self.pool = await WorkerPool.create(
                    self.config.rig, self.config.engine, namespace=NAMESPACE, faults=self.faults
                )
            cards = await self._checked_cards()
            keys = OperatorKeys.from_mnemonic_source(env=self.config.network.operator.mnemonic_env)
            settings = CoordinatorSettings(
                rpc_url=self.chain["rpc_url"], addresses=self.chain["addresses"],
                relay_url=self.chain["relay_url"], state_dir=_state_dir(self.config), cards=cards,
                start_block=self.chain["start_block"], guard_own_results=self.config.guard_own_results,
            )  # fmt: skip
            self.coordinator = Coordinator(settings, keys, self.pool)
            await self.coordinator.start()
            await self.coordinator.join_nodes()
            self._stop = asyncio.Event()
            self._loop_task = asyncio.create_task(self.coordinator.run(self._stop))
            if self.config.metrics_port and self._metrics_task is None:
                try:
                    self.metrics.serve(self.config.metrics_port)
                except OSError as exc:  # a port in use must not keep the farm from serving
                    log.error("[coordinator] metrics port %d unavailable: %s", self.config.metrics_port, exc)
                self._metrics_task = asyncio.create_task(self._refresh_metrics())

    async def _refresh_metrics(self, every_s: float = 10.0) -> None:
        while True:
            try:
                await self.refresh_metrics()
            except Exception:  # metrics must never stop the farm
                log.exception("[coordinator] metrics refresh failed")
            await asyncio.sleep(every_s)

    async def refresh_metrics(self) -> None:
        coordinator, pool = self.coordinator, self.pool
        if coordinator is None or pool is None:
            return
        status = coordinator.status()
        qos = {node: await coordinator.ops.qos_score(node) for node in status["nodes"]}
        self.metrics.update(status, qos, await pool.workers_info())

    async def _checked_cards(self) -> list[tuple[str, int, str]]:
        """One (gpuName, VRAM, runtime) per node slot, for the card models whose workers agree."""
        assert self.pool is not None
        cards: list[tuple[str, int, str]] = []
        reference = (
            reference_tasks(self.chain["reference_model"]) if self.chain.get("reference_model") else None
        )
        for key, card in sorted(self.pool.card_models().items()):
            if reference is not None:
                check = await check_group(self.pool, key, reference)
                self.group_checks[card.short_id] = check.message
                if not check.ok:
                    log.error("[coordinator] card model kept out: %s", check.message)
                    continue
            slots = self.pool.num_gpus(key) * self.config.rig.slots_per_gpu
            cards += [(card.gpu_name, card.vram_gb, card.runtime)] * slots
        return cards

    async def status(self) -> dict[str, Any]:
        await self.ensure_started()
        assert self.coordinator is not None
        return {**self.coordinator.status(), "group_checks": dict(self.group_checks)}

    async def stop(self, *, quit: bool = False, timeout_s: float = 120.0) -> dict[str, Any]:
        if self.coordinator is None:
            return {"stopped": False}
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        final = self.coordinator.status()
        await self.coordinator.stop(drain=True, quit=quit, timeout_s=timeout_s)
        self.coordinator = None
        return {"stopped": True, **final}


def _state_dir(config: ClusterConfig) -> Path:
    return Path(config.state_dir).expanduser().resolve() / "coordinator"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class CoordinatorActor:
    def __init__(self, config: dict[str, Any], chain: dict[str, Any], faults: dict[int, dict] | None = None):
        logging.basicConfig(level=os.environ.get("HELIUM_LOG_LEVEL", "WARNING"))
        self.service = CoordinatorService(config, chain, faults)

    async def status(self) -> dict[str, Any]:
        return await self.service.status()

    async def stop(self, quit: bool = False) -> dict[str, Any]:
        return await self.service.stop(quit=quit)

    async def refresh_metrics(self) -> None:
        await self.service.refresh_metrics()

    async def shutdown_workers(self) -> None:
        if self.service.pool is not None:
            await self.service.pool.shutdown()
