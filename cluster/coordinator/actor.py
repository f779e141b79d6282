"""The coordinator as a named, detached Ray actor that Ray restarts after a failure.

The actor owns the worker pool (get-or-create: a restarted actor finds the running workers and their warm
models) and the Coordinator loop. The actor starts its loop itself as soon as it is constructed, so after
a crash the actor Ray restarts resumes on its own, whoever drives it and whether or not anything calls it
(every call also makes sure the loop runs). All state comes from the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import ray

from cluster import envs
from cluster.chain.accounts import OperatorKeys
from cluster.chain.contracts import NodeStatus
from cluster.config import ChainEndpoints, ClusterConfig, round_drivers_for
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings
from cluster.coordinator.drivers.fleet import DriverHost
from cluster.coordinator.funds.settings import FundsSettings
from cluster.coordinator.metrics import FarmMetrics
from cluster.coordinator.scheduling.drain_cli import DEFAULT_TIMEOUT_S as DRAIN_TIMEOUT_S
from cluster.coordinator.scheduling.machines import DrainedMachines
from cluster.coordinator.scheduling.pool import WorkerPool
from cluster.coordinator.scheduling.reference_check import check_card_model, reference_tasks
from cluster.failures import Failure, classify, log_retried_failure
from cluster.ledger.model import LedgerReport
from cluster.protocol.cards import CardModel
from cluster.status.collect import collect_status
from cluster.status.machines import machine_alerts
from cluster.status.model import CoordinatorStatus, FarmStatus, MachineView, PayoutReport

log = logging.getLogger(__name__)
ACTOR_NAME = "helium-coordinator"
NAMESPACE = "helium"


class CoordinatorService:
    """What the actor does, in plain Python (the actor below only wraps it)."""

    def __init__(self, config: ClusterConfig, endpoints: ChainEndpoints):
        self.config = config
        self.endpoints = endpoints
        self.coordinator: Coordinator | None = None
        self.pool: WorkerPool | None = None
        self.group_checks: dict[str, str] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._machines_task: asyncio.Task[None] | None = None
        self._places: dict[CardModel, int] = {}
        self._kept_out: set[CardModel] = set()  # card models whose workers disagreed on the reference
        self._stop = asyncio.Event()
        self._starting = asyncio.Lock()
        self.metrics = FarmMetrics()
        self._metrics_task: asyncio.Task[None] | None = None

    async def ensure_started(self) -> Coordinator:
        async with self._starting:
            if self.coordinator is not None and self._loop_task is not None and not self._loop_task.done():
                return self.coordinator
            state_dir = state_dir_of(self.config)
            self.drained = DrainedMachines(state_dir / "drained_machines.json")
            if self.pool is None:
                self.pool = await WorkerPool.create(
                    self.config.rig, self.config.engine, namespace=NAMESPACE, drained=self.drained.node_ids()
                )  # fmt: skip
            places = await self._checked_places()
            settings = CoordinatorSettings(
                endpoints=self.endpoints, state_dir=state_dir,
                cards=[card for card, count in sorted(places.items(), key=lambda kv: kv[0].key)
                       for _ in range(count)],
                guard_own_results=self.config.guard_own_results,
                funds=FundsSettings.of(self.config.network.operator),
                round_drivers=round_drivers_for(sum(places.values()), self.config.rig.round_drivers),
                mnemonic_env=self.config.network.operator.mnemonic_env,
            )  # fmt: skip
            keys = OperatorKeys.from_mnemonic_source(env=self.config.network.operator.mnemonic_env)
            self.coordinator = Coordinator(settings, keys, self.pool)
            await self.coordinator.start()
            await self.coordinator.follow_capacity(places)  # the registry's accounts to today's places
            await self.coordinator.join_nodes()
            self._places = places
            self._stop = asyncio.Event()
            self._loop_task = asyncio.create_task(self.coordinator.run(self._stop))
            self._machines_task = asyncio.create_task(self._follow_machines(self._stop))
            self._start_metrics()
            return self.coordinator

    async def _follow_machines(self, stop: asyncio.Event) -> None:
        """Machines join, fail and come back: the pool follows Ray's nodes and the accounts follow the
        places (capacity.py). Never raises: a failure is retried at the next look."""
        last_failure = None
        while not stop.is_set():
            try:
                await self.follow_machines_once()
                last_failure = None
            except Exception as exc:
                last_failure = log_retried_failure(log, "[coordinator] machines", exc, last_failure)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.machines_poll_s)

    async def follow_machines_once(self) -> None:
        assert self.pool is not None
        await self.pool.follow_machines()
        await self._follow_places()

    async def _follow_places(self) -> None:
        """The accounts to the places the pool has now, when they changed or the chain has not followed
        the last change yet."""
        assert self.coordinator is not None
        places = await self._checked_places()
        if places != self._places or not self.coordinator.is_capacity_settled:
            self._places = places
            await self.coordinator.follow_capacity(places)

    async def _checked_places(self) -> dict[CardModel, int]:
        """Places per card model, for the card models whose workers agree (the reference check runs once
        per card model, when its first workers serve)."""
        assert self.pool is not None
        model = self.config.engine.reference_model
        places = {}
        for card, count in self.pool.places().items():
            if model and card.short_id not in self.group_checks:
                check = await check_card_model(self.pool, card, reference_tasks(model))
                self.group_checks[card.short_id] = check.message
                if not check.ok:
                    self._kept_out.add(card)
                    log.error("[coordinator] card model kept out: %s", check.message)
            if card not in self._kept_out:
                places[card] = count
        return places

    async def drain(
        self, machine_text: str, *, wait: bool = True, timeout_s: float = DRAIN_TIMEOUT_S
    ) -> MachineView:
        """Take a machine out: its places stop counting, so its share of the accounts is paused on chain
        (mined) before anything else; its running jobs finish; then its workers stop (DRAINED: safe to
        remove). The drain is kept in the state directory: a restarted coordinator does not start workers
        there again until ``undrain``."""
        await self.ensure_started()
        assert self.pool is not None and self.coordinator is not None
        machine = self.pool.machine(machine_text)
        self.drained.add(machine.node_id)
        self.pool.start_drain(machine)
        await self._follow_places()
        if wait:
            await self.pool.finish_drain(machine, timeout_s)
        return self._view(machine.node_id)

    async def undrain(self, machine_text: str) -> MachineView:
        await self.ensure_started()
        assert self.pool is not None and self.coordinator is not None
        machine = self.pool.machine(machine_text)
        self.drained.remove(machine.node_id)
        await self.pool.undrain(machine)
        await self._follow_places()
        return self._view(machine.node_id)

    def _view(self, node_id: str) -> MachineView:
        assert self.pool is not None
        return next(view for view in self.pool.machines() if view.node_id == node_id)

    def _start_metrics(self) -> None:
        if not self.config.metrics_port or self._metrics_task is not None:
            return
        try:
            self.metrics.serve(self.config.metrics_port)
        except OSError as exc:  # a port in use must not keep the farm from serving
            log.error("[coordinator] metrics port %d unavailable: %s", self.config.metrics_port, exc)
        self._metrics_task = asyncio.create_task(self._refresh_metrics())

    async def _refresh_metrics(self, every_s: float = 10.0) -> None:
        last_failure = None
        while True:
            try:
                await self.refresh_metrics()
                last_failure = None
            except Exception as exc:  # metrics must never stop the farm: the next refresh tries again
                last_failure = log_retried_failure(log, "[coordinator] metrics refresh", exc, last_failure)
            await asyncio.sleep(every_s)

    async def refresh_metrics(self) -> None:
        coordinator, pool = self.coordinator, self.pool
        if coordinator is None or pool is None:
            return
        farm = await collect_status(coordinator, pool, self.group_checks)
        qos = {node.address: node.qos_score for node in farm.nodes}
        self.metrics.update(coordinator.status(), qos, await pool.workers_info())
        self.metrics.update_farm(farm)

    async def farm_status(self) -> FarmStatus:
        """The farm for ``python -m cluster status``: cards, workers, node accounts, alerts, endpoints."""
        coordinator = await self.ensure_started()
        assert self.pool is not None
        return await collect_status(coordinator, self.pool, self.group_checks)

    async def status(self) -> CoordinatorStatus:
        """The coordinator's own status, with the machines' alerts (a lost machine, a drained one): the
        periodic line shows them too."""
        coordinator = await self.ensure_started()
        own = coordinator.status()
        machines = machine_alerts(self.pool.machines()) if self.pool is not None else []
        return own.model_copy(update={"reference_checks": dict(self.group_checks),
                                      "alerts": own.alerts + machines})  # fmt: skip

    async def resume_card(self, key_text: str) -> dict[str, NodeStatus]:
        coordinator = await self.ensure_started()
        return await coordinator.resume_card(key_text)

    async def ledger(self, *, by_account: bool = False, since_day: str = "") -> LedgerReport:
        coordinator = await self.ensure_started()
        return coordinator.ledger.store.report(by_account=by_account, since_day=since_day)

    async def payout(self, *, is_dry_run: bool = False) -> PayoutReport:
        coordinator = await self.ensure_started()
        return await coordinator.funds.payout(is_dry_run=is_dry_run)

    async def retire(self, card_key: str | None) -> list[str]:
        """Retire the node accounts of one card model (its key or a prefix), or all with None; the
        accounts newly marked. Their progress shows in the status."""
        coordinator = await self.ensure_started()
        nodes = coordinator.nodes
        accounts = nodes.accounts if card_key is None else nodes.of_card(nodes.card_named(card_key))
        return coordinator.funds.retire(accounts)

    async def stop(self, *, quit: bool = False, timeout_s: float = 120.0) -> CoordinatorStatus | None:
        """Stop gracefully (the nodes paused, running tasks finished, quit if asked); the farm as it was
        left, or None when it was not running."""
        if self.coordinator is None:
            return None
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._machines_task is not None:
            await self._machines_task
        await self.coordinator.stop(drain=True, quit=quit, timeout_s=timeout_s, close=False)
        final = self.coordinator.status()
        await self.coordinator.close()
        self.coordinator = None
        return final


def state_dir_of(config: ClusterConfig) -> Path:
    """Where the coordinator keeps its durable state: ``<state_dir>/coordinator``."""
    return Path(config.state_dir).expanduser().resolve() / "coordinator"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class CoordinatorActor(DriverHost):
    def hosted_coordinator(self) -> Coordinator | None:
        return self.service.coordinator

    def __init__(self, config: ClusterConfig, endpoints: ChainEndpoints):
        logging.basicConfig(level=envs.LOG_LEVEL.get())
        self.service = CoordinatorService(config, endpoints)
        # An async actor's constructor runs with the actor's event loop current: the start goes on there.
        self._boot = asyncio.get_event_loop().create_task(self._start_on_its_own())

    async def _start_on_its_own(self, retry_s: float = 5.0, max_retry_s: float = 60.0) -> None:
        """Start the loop without waiting for a call: a restarted actor must not sit idle until someone
        asks for its status (the devnet streamed tasks for 150 s to an idle coordinator). The chain or the
        relay not answering yet is tried again every ``retry_s``; anything else (a configuration the
        operator must fix, a bug) is logged with its traceback once and tried less and less often, and
        every call to the actor tries again at once, raising the reason to its caller."""
        wait_s, last_failure = retry_s, None
        while True:
            try:
                await self.service.ensure_started()
                return
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
                if classify(exc) is Failure.TRANSIENT:
                    log.warning("[coordinator] start failed, trying again in %.0f s: %s", retry_s, failure)
                    wait_s = retry_s
                else:
                    if failure != last_failure:
                        log.error("[coordinator] start failed; trying again less often", exc_info=exc)
                    wait_s = min(2 * wait_s, max_retry_s)
                last_failure = failure
                await asyncio.sleep(wait_s)

    async def status(self) -> CoordinatorStatus:
        return await self.service.status()

    async def farm_status(self) -> FarmStatus:
        return await self.service.farm_status()

    async def resume_card(self, key_text: str) -> dict[str, NodeStatus]:
        return await self.service.resume_card(key_text)

    async def ledger(self, *, by_account: bool = False, since_day: str = "") -> LedgerReport:
        return await self.service.ledger(by_account=by_account, since_day=since_day)

    async def payout(self, is_dry_run: bool = False) -> PayoutReport:
        return await self.service.payout(is_dry_run=is_dry_run)

    async def retire(self, card_key: str | None) -> list[str]:
        return await self.service.retire(card_key)

    async def drain(self, machine: str, wait: bool = True, timeout_s: float = DRAIN_TIMEOUT_S) -> MachineView:
        return await self.service.drain(machine, wait=wait, timeout_s=timeout_s)

    async def undrain(self, machine: str) -> MachineView:
        return await self.service.undrain(machine)

    async def stop(self, quit: bool = False) -> CoordinatorStatus | None:
        self._boot.cancel()
        return await self.service.stop(quit=quit)

    async def refresh_metrics(self) -> None:
        await self.service.refresh_metrics()

    async def shutdown_workers(self) -> None:
        if self.service.pool is not None:
            await self.service.pool.shutdown()
