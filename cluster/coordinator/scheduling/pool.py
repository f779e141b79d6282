"""The coordinator's handle on the GPU workers: one group per card model, jobs queued per group.

All of the pool's state lives on the coordinator's event loop and is changed only there (Ray's reply
callbacks are delivered on the loop too), so no locks. A job for a card model runs on any worker of that
group: the pool prefers one that already holds the task's model, retries a transient failure (RETRY
action) with backoff on a sibling until the deadline, replaces a dead worker in the background, and
returns a task error (REPORT action) at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Collection, Coroutine
from typing import Any

import ray
from ray.exceptions import RayError

from cluster.config import EngineConfig, RigConfig
from cluster.coordinator.scheduling.groups import CardGroup, WorkerState
from cluster.coordinator.scheduling.machines import (
    Machine,
    MachineState,
    alive_nodes,
    find_machine,
    node_gpus,
    offers_gpus,
)
from cluster.coordinator.scheduling.placement import (
    PoolError,
    WorkerPlacement,
    actor_options,
    check_node_capacity,
    plan_machine,
    required_resources,
    virtual_workers,
)
from cluster.coordinator.scheduling.recovery import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    WORKER_LOST_ERRORS,
    bring_back,
    ray_future,
)
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import ExecutionError
from cluster.status.model import MachineView
from cluster.workers.messages import JobReply, JobRequest, WorkerInfo

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0


class WorkerPool:
    def __init__(self, rig: RigConfig, engine: EngineConfig, namespace: str) -> None:
        self.rig = rig
        self.engine = engine
        self.namespace = namespace
        self._groups: dict[CardModel, CardGroup] = {}
        self._machines: dict[str, Machine] = {}  # by Ray node id, lost and drained ones included
        self._plans: dict[str, list[WorkerPlacement]] = {}  # each machine's workers, planned once
        self._background: set[asyncio.Task[None]] = set()
        self._is_shut_down = False

    @classmethod
    async def create(
        cls,
        rig: RigConfig,
        engine: EngineConfig,
        *,
        namespace: str = "helium",
        ready_timeout_s: float = READY_TIMEOUT_S,
        drained: Collection[str] = (),
    ) -> WorkerPool:
        """Get or create the workers of every machine with GPUs (``placement.plan_machine``) and wait until
        all are up. Machines in ``drained`` (node ids the operator drained) get none until undrained."""
        if not ray.is_initialized():
            raise PoolError("connect to Ray (ray.init) before WorkerPool.create")
        pool = cls(rig, engine, namespace)
        nodes = [node for node in alive_nodes().values() if offers_gpus(node, rig, engine)]
        if not nodes:
            raise PoolError(_no_gpus_message(rig, engine))
        for node in sorted(nodes, key=lambda node: (node["NodeManagerAddress"], node["NodeID"])):
            machine = await pool._add_machine(node)
            if machine.node_id in drained:
                machine.enter(MachineState.DRAINED)
            else:
                pool._start_workers(machine)
        check_node_capacity(pool._placements_all(), [node["Resources"] for node in nodes])
        await pool._wait_ready(ready_timeout_s)
        return pool

    def _spawn(self, placement: WorkerPlacement) -> Any:
        # The actors' modules import torch: only when needed.
        if self.rig.gpu_sharing == "batched":
            from cluster.workers.batched import BatchedGpuWorkerActor as actor_class
        else:
            from cluster.workers.worker import GpuWorkerActor as actor_class

        options = actor_options(placement, self.rig, self.namespace)
        return actor_class.options(**options).remote(
            placement.card, placement.index, placement.name, self.rig, self.engine,
            num_gpus=placement.num_gpus, num_replicas=placement.num_replicas, gpu=placement.gpu_card,
        )  # fmt: skip

    async def _wait_ready(self, timeout_s: float) -> None:
        workers = self._all_workers()
        calls = [ray_future(w.handle.loaded_models.remote()) for w in workers]
        try:
            loaded = await asyncio.wait_for(asyncio.gather(*calls), timeout_s)
        except TimeoutError:
            raise PoolError(
                f"workers not up after {timeout_s:g}s: {[w.worker_id for w in workers]}; "
                "`ray status` shows whether they wait for GPUs or card resources"
            ) from None
        except WORKER_LOST_ERRORS as exc:
            raise PoolError(f"a worker failed to start: {exc}") from exc
        for worker, models in zip(workers, loaded, strict=True):
            worker.serves(models)
        logger.info("[pool] ready workers=%d card_models=%d", len(workers), len(self._groups))

    # --- machines: they join, drain, fail and come back ---

    async def _add_machine(self, node: dict[str, Any]) -> Machine:
        gpus = await node_gpus(node, self.rig, self.engine)
        machine = Machine(node["NodeID"], node["NodeManagerAddress"], gpus)
        first = sum(len(plan) for plan in self._plans.values())
        self._plans[machine.node_id] = plan_machine(machine.node_id, gpus, self.rig, self.engine,
                                                    first_index=first)  # fmt: skip
        self._machines[machine.node_id] = machine
        logger.info("[pool] machine joined machine=%s address=%s gpus=%d", machine.node_id[:8],
                    machine.address, len(gpus))  # fmt: skip
        return machine

    def _start_workers(self, machine: Machine) -> list[WorkerState]:
        """Spawn (or find, by name) the machine's workers; they join their groups once they answer."""
        started = []
        for placement in self._plans[machine.node_id]:
            group = self._groups.setdefault(placement.card, CardGroup(placement.card))
            if group.find(placement.name) is None:
                worker = WorkerState(placement, self._spawn(placement), is_alive=False)
                group.workers.append(worker)
                started.append(worker)
        machine.enter(MachineState.SERVING)
        return started

    def _placements_all(self) -> list[WorkerPlacement]:
        return [placement for plan in self._plans.values() for placement in plan]

    def _workers_of(self, machine: Machine) -> list[WorkerState]:
        return self._workers_by_machine().get(machine.node_id, [])

    def _workers_by_machine(self) -> dict[str, list[WorkerState]]:
        """The workers in rotation (or being brought back) per machine, in one pass over the farm."""
        by_machine: dict[str, list[WorkerState]] = {}
        for worker in self._all_workers():
            by_machine.setdefault(worker.placement.node_id, []).append(worker)
        return by_machine

    async def follow_machines(self) -> bool:
        """Look at Ray's nodes once: a machine found dead is LOST (its workers leave their groups and their
        jobs run again on siblings); a new machine with GPUs gets its workers, which serve once they answer.
        True when the farm's places may have changed."""
        alive = alive_nodes()
        changed = False
        for machine in self._machines.values():
            if machine.node_id not in alive and machine.state is not MachineState.LOST:
                logger.warning("[pool] machine lost machine=%s address=%s state=%s", machine.node_id[:8],
                               machine.address, machine.state)  # fmt: skip
                self._remove_workers(machine)
                machine.enter(MachineState.LOST)
                changed = True
        for node_id, node in alive.items():
            if node_id not in self._machines and offers_gpus(node, self.rig, self.engine):
                machine = await self._add_machine(node)
                self._in_background(self._bring_up(self._start_workers(machine)))
                changed = True
        return changed

    async def _bring_up(self, workers: list[WorkerState]) -> None:
        """A joining machine's workers serve once each answers (a cold start loads models, the rest of the
        farm goes on meanwhile; one that never gets its resources never serves, and its places never
        count)."""
        calls = [ray_future(w.handle.loaded_models.remote()) for w in workers]
        for worker, done in zip(workers, await asyncio.gather(*calls, return_exceptions=True), strict=True):
            if isinstance(done, BaseException):
                logger.error("[pool] worker failed to start worker=%s: %r", worker.worker_id, done)
                self._in_background(bring_back(self._spawn, self._groups[worker.placement.card], worker))
                continue
            worker.serves(done)
            self._groups[worker.placement.card].wake()

    def _remove_workers(self, machine: Machine) -> list[WorkerState]:
        """Take the machine's workers out of their groups (a job running there fails over to a sibling)."""
        gone = self._workers_of(machine)
        for worker in gone:
            worker.is_alive, worker.is_gone = False, True
            group = self._groups[worker.placement.card]
            group.workers.remove(worker)
            group.wake()
        return gone

    def machine(self, text: str) -> Machine:
        """The machine ``text`` names: its address, or its node id or a prefix of it."""
        return find_machine(list(self._machines.values()), text)

    def start_drain(self, machine: Machine) -> None:
        """No new job for the machine's workers; the running ones go on. Its places stop counting."""
        if machine.state in (MachineState.SERVING, MachineState.DRAINING):
            for worker in self._workers_of(machine):
                worker.is_draining = True
            machine.enter(MachineState.DRAINING)

    async def finish_drain(self, machine: Machine, timeout_s: float) -> bool:
        """Wait until the draining machine's running jobs end, then stop its workers: DRAINED (safe to
        remove). False if jobs still ran at ``timeout_s`` (the machine stays DRAINING)."""
        deadline = time.monotonic() + timeout_s
        while machine.state is MachineState.DRAINING:
            workers = self._workers_of(machine)
            if not any(w.num_running for w in workers):
                for worker in self._remove_workers(machine):
                    _kill(worker)
                machine.enter(MachineState.DRAINED)
                logger.info("[pool] machine drained machine=%s address=%s", machine.node_id[:8],
                            machine.address)  # fmt: skip
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))  # jobs end in seconds
        return machine.state is MachineState.DRAINED

    async def undrain(self, machine: Machine) -> None:
        """Take a draining or drained machine back: its workers serve again (started again if stopped)."""
        if machine.state is MachineState.DRAINING:
            for worker in self._workers_of(machine):
                worker.is_draining = False
            machine.enter(MachineState.SERVING)
            for group in self._groups.values():
                group.wake()
        elif machine.state is MachineState.DRAINED:
            await self._bring_up(self._start_workers(machine))

    def places(self) -> dict[CardModel, int]:
        """Task places per card model on serving machines, of workers that answered once (one being
        brought back after a crash still counts: its machine is there)."""
        places: dict[CardModel, int] = {}
        for group in self._groups.values():
            for worker in group.workers:
                machine = self._machines.get(worker.placement.node_id)
                is_serving = machine is None or machine.is_serving
                if is_serving and (worker.is_alive or worker.has_served):  # a draining one's machine is not
                    places[group.card] = places.get(group.card, 0) + worker.placement.num_places
        return places

    def machines(self) -> list[MachineView]:
        views, by_machine = [], self._workers_by_machine()
        for machine in self._machines.values():
            plan, workers = self._plans[machine.node_id], by_machine.get(machine.node_id, [])
            gpus = dict(Counter(gpu.short_id for gpu in machine.gpus))
            views.append(MachineView(
                node_id=machine.node_id, address=machine.address, state=machine.state.value, gpus=gpus,
                num_workers=len(plan), num_alive_workers=sum(w.is_alive for w in workers),
                num_places=sum(p.num_places for p in plan), num_running=sum(w.num_running for w in workers),
                since_s=machine.since_s,
            ))  # fmt: skip
        return sorted(views, key=lambda view: (view.address, view.node_id))

    # --- what the coordinator reads ---

    def card_models(self) -> list[CardModel]:
        return sorted(self._groups, key=lambda card: card.key)

    def num_gpus(self, card: CardModel) -> int:
        """Workers of ``card``: each is one GPU of its card model (a ``2x`` worker is one "2x GPU")."""
        return len(self._group(card).workers)

    def num_places(self, card: CardModel) -> int:
        """Tasks ``card``'s workers run at once: one node account each (a node holds one task at a time)."""
        return sum(w.placement.num_places for w in self._group(card).workers)

    def num_alive(self, card: CardModel) -> int:
        return sum(w.is_alive for w in self._group(card).workers)

    def worker_ids(self, card: CardModel) -> list[str]:
        return [w.worker_id for w in self._group(card).workers]

    async def workers_info(self) -> list[WorkerInfo]:
        """Each alive worker's own ``info()`` (card model, index, load, counters)."""
        alive = [w for w in self._all_workers() if w.is_alive]
        return list(await asyncio.gather(*(ray_future(w.handle.info.remote()) for w in alive)))

    def _group(self, card: CardModel) -> CardGroup:
        if card not in self._groups:
            known = [c.short_id for c in self._groups]
            raise KeyError(f"no workers of card model {card.describe()}; this farm has {known}")
        return self._groups[card]

    def _all_workers(self) -> list[WorkerState]:
        return [w for group in self._groups.values() for w in group.workers]

    # --- jobs ---

    async def run_job(self, card: CardModel, request: JobRequest) -> JobReply:
        """Run one task on a worker of ``card`` before ``request.deadline_unix_s``."""
        return await self._run(self._group(card), request, None)

    async def run_job_on(self, worker_id: str, request: JobRequest) -> JobReply:
        """Run one task on this very worker (the reference check compares workers); transient errors are
        retried there."""
        for group in self._groups.values():
            if group.find(worker_id) is not None:
                return await self._run(group, request, worker_id)
        raise KeyError(f"no worker {worker_id!r} in this pool")

    async def _run(self, group: CardGroup, request: JobRequest, only: str | None) -> JobReply:
        attempts, last_error, avoid, backoff_s = 0, None, "", BACKOFF_INITIAL_S
        deadline_unix_s = request.deadline_unix_s
        while True:
            if self._is_shut_down:
                raise PoolError("the worker pool is shut down")
            worker = await group.acquire(deadline_unix_s, request.model, avoid, only)
            if worker is None:
                raise group.deadline_error(attempts, last_error)
            attempts += 1
            try:
                reply = await self._dispatch(group, worker, request)
            except WORKER_LOST_ERRORS as exc:
                logger.warning("[pool] worker lost worker=%s attempt=%d: %s", worker.worker_id, attempts, exc)
                self._mark_lost(group, worker)
                last_error, avoid = ExecutionError(f"worker {worker.worker_id} died: {exc}"), worker.worker_id
                continue  # a sibling takes the job now: no backoff
            except RayError as exc:  # the call failed, not the worker (e.g. a reply that did not unpickle)
                logger.warning(
                    "[pool] call failed worker=%s attempt=%d", worker.worker_id, attempts, exc_info=exc
                )
                reply = JobReply(worker.worker_id, error=ExecutionError(f"{type(exc).__name__}: {exc}"))
            if reply is None:
                raise group.deadline_error(attempts, last_error)
            if reply.error is None or reply.error.is_task_error:
                return dataclasses.replace(reply, attempts=attempts)
            logger.info(
                "[pool] retrying job=%s worker=%s attempt=%d error=%s",
                request.name, worker.worker_id, attempts, reply.error,
            )  # fmt: skip
            last_error, avoid = reply.error, worker.worker_id
            await asyncio.sleep(max(0.0, min(backoff_s, deadline_unix_s - time.time())))
            backoff_s = min(2 * backoff_s, BACKOFF_MAX_S)

    async def _dispatch(self, group: CardGroup, worker: WorkerState, request: JobRequest) -> JobReply | None:
        """The worker's reply, or None past the deadline (the job runs on until its engine sees the
        deadline; its place frees when it ends)."""
        handle = worker.handle
        reply = ray_future(handle.run_job.remote(request))
        reply.add_done_callback(lambda done: self._on_reply(group, worker, handle, done))
        remaining_s = max(0.0, request.deadline_unix_s - time.time())
        finished, _ = await asyncio.wait({reply}, timeout=remaining_s)
        return reply.result() if finished else None

    def _on_reply(
        self, group: CardGroup, worker: WorkerState, handle: Any, reply: asyncio.Future[JobReply]
    ) -> None:
        group.release(worker, reply)
        # A late reply from an actor already replaced says nothing about its successor.
        lost = not reply.cancelled() and isinstance(reply.exception(), WORKER_LOST_ERRORS)
        if lost and worker.handle is handle:
            self._mark_lost(group, worker)

    def _mark_lost(self, group: CardGroup, worker: WorkerState) -> None:
        if worker.is_alive and not self._is_shut_down and not worker.is_gone:
            worker.is_alive = False
            worker.loaded_models = frozenset()
            self._in_background(bring_back(self._spawn, group, worker))

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # kept so that it is not collected mid-flight
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        """Kill every worker (they are detached: nothing else ends them)."""
        self._is_shut_down = True
        for task in list(self._background):
            task.cancel()
        for worker in self._all_workers():
            _kill(worker)
        for group in self._groups.values():
            group.wake()
        logger.info("[pool] shut down workers=%d", len(self._all_workers()))


def _kill(worker: WorkerState) -> None:
    try:
        ray.kill(worker.handle, no_restart=True)
    except Exception:  # an actor already gone; stopping the rest matters more
        logger.warning("[pool] kill failed worker=%s", worker.worker_id, exc_info=True)
    worker.is_alive = False


def _no_gpus_message(rig: RigConfig, engine: EngineConfig) -> str:
    if rig.discover_gpus:
        return ("rig.discover_gpus is true but no alive Ray node offers a GPU; "
                "start the GPU nodes first, or use a rig with virtual_gpus (rig=cpu-devnet)")  # fmt: skip
    needed = required_resources(virtual_workers(rig, engine))
    return (f"no alive Ray node declares the rig's virtual card resources {json.dumps(needed)}: "
            "ray.init(resources=...) on one machine, or `ray start --resources` per simulated "
            "machine")  # fmt: skip
