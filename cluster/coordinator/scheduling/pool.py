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
import logging
import time
from collections.abc import Coroutine
from typing import Any

import ray
from ray.exceptions import RayError

from cluster.config import EngineConfig, RigConfig
from cluster.coordinator.scheduling.groups import CardGroup, WorkerState
from cluster.coordinator.scheduling.placement import (
    PoolError,
    WorkerPlacement,
    actor_options,
    check_cluster_resources,
    check_node_capacity,
    discovered_cards,
    plan_workers,
    virtual_cards,
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
from cluster.workers.messages import JobReply, JobRequest, WorkerInfo

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0


class WorkerPool:
    def __init__(self, rig: RigConfig, engine: EngineConfig, namespace: str) -> None:
        self.rig = rig
        self.engine = engine
        self.namespace = namespace
        self._groups: dict[CardModel, CardGroup] = {}
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
    ) -> WorkerPool:
        """Get or create the rig's workers (``placement.plan_workers``) and wait until all are up."""
        if not ray.is_initialized():
            raise PoolError("connect to Ray (ray.init) before WorkerPool.create")
        nodes = await discovered_cards(engine) if rig.discover_gpus else [virtual_cards(rig, engine)]
        placements = plan_workers(nodes, rig, engine)
        check_cluster_resources(placements, ray.cluster_resources())
        check_node_capacity(placements, [node["Resources"] for node in ray.nodes() if node["Alive"]])
        pool = cls(rig, engine, namespace)
        for placement in placements:
            group = pool._groups.setdefault(placement.card, CardGroup(placement.card))
            group.workers.append(WorkerState(placement, pool._spawn(placement)))
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
            worker.loaded_models = frozenset(models)
        logger.info("[pool] ready workers=%d card_models=%d", len(workers), len(self._groups))

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
        if worker.is_alive and not self._is_shut_down:
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
            try:
                ray.kill(worker.handle, no_restart=True)
            except Exception:  # an actor already gone; shutting down the rest matters more
                logger.warning("[pool] kill failed worker=%s", worker.worker_id, exc_info=True)
            worker.is_alive = False
        for group in self._groups.values():
            group.wake()
        logger.info("[pool] shut down workers=%d", len(self._all_workers()))
