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
    WorkerSlot,
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
from cluster.coordinator.scheduling.runner import JobResult
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import ExecutionError
from cluster.workers.messages import JobReply, JobRequest, WorkerInfo

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0


class WorkerPool:
    def __init__(
        self, rig: RigConfig, engine: EngineConfig, namespace: str, corrupt_workers: frozenset[int]
    ) -> None:
        self.rig = rig
        self.engine = engine
        self.namespace = namespace
        self._corrupt_workers = corrupt_workers
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
        corrupt_workers: frozenset[int] = frozenset(),
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> WorkerPool:
        """Get or create the rig's workers (``placement.plan_workers``) and wait until all are up.

        ``corrupt_workers`` (a test fault, ``TestHooks``): indices of workers that return wrong results.
        """
        if not ray.is_initialized():
            raise PoolError("connect to Ray (ray.init) before WorkerPool.create")
        nodes = await discovered_cards(engine) if rig.discover_gpus else [virtual_cards(rig, engine)]
        slots = plan_workers(nodes, rig, engine)
        check_cluster_resources(slots, ray.cluster_resources())
        check_node_capacity(slots, [node["Resources"] for node in ray.nodes() if node["Alive"]])
        unknown = sorted(corrupt_workers - set(range(len(slots))))
        if unknown:
            raise PoolError(f"corrupt_workers names {unknown}; this rig has workers 0..{len(slots) - 1}")
        pool = cls(rig, engine, namespace, corrupt_workers)
        for slot in slots:
            group = pool._groups.setdefault(slot.card, CardGroup(slot.card))
            group.workers.append(WorkerState(slot, pool._spawn(slot)))
        await pool._wait_ready(ready_timeout_s)
        return pool

    def _spawn(self, slot: WorkerSlot) -> Any:
        # The actors' modules import torch: only when needed.
        if self.rig.slot_mode == "batched":
            from cluster.workers.batched import BatchedGpuWorker as worker_class
        else:
            from cluster.workers.worker import GpuWorker as worker_class

        options = actor_options(slot, self.rig, self.namespace)
        is_corrupt = slot.index in self._corrupt_workers
        return worker_class.options(**options).remote(
            slot.card, slot.index, slot.name, self.rig, self.engine, corrupt_results=is_corrupt,
            num_gpus=slot.num_gpus, num_replicas=slot.num_replicas, gpu=slot.gpu_card,
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
        return sum(w.slot.num_places for w in self._group(card).workers)

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

    async def run_job(
        self, card: CardModel, request: JobRequest, *, deadline_unix_s: float, model_hint: str | None = None
    ) -> JobResult:
        """Run one task on a worker of ``card`` before ``deadline_unix_s`` (``time.time()`` seconds)."""
        return await self._run(self._group(card), request, deadline_unix_s, model_hint, None)

    async def run_job_on(self, worker_id: str, request: JobRequest, *, deadline_unix_s: float) -> JobResult:
        """Run one task on this very worker (the guard compares workers); transient errors retried there."""
        for group in self._groups.values():
            if group.find(worker_id) is not None:
                return await self._run(group, request, deadline_unix_s, None, worker_id)
        raise KeyError(f"no worker {worker_id!r} in this pool")

    async def _run(
        self,
        group: CardGroup,
        request: JobRequest,
        deadline_unix_s: float,
        hint: str | None,
        only: str | None,
    ) -> JobResult:
        attempts, last_error, avoid, backoff_s = 0, None, "", BACKOFF_INITIAL_S
        while True:
            if self._is_shut_down:
                raise PoolError("the worker pool is shut down")
            worker = await group.acquire(deadline_unix_s, hint, avoid, only)
            if worker is None:
                raise group.deadline_error(attempts, last_error)
            attempts += 1
            try:
                reply = await self._dispatch(group, worker, request, deadline_unix_s)
            except WORKER_LOST_ERRORS as exc:
                logger.warning("[pool] worker lost worker=%s attempt=%d: %s", worker.worker_id, attempts, exc)
                self._mark_lost(group, worker)
                last_error, avoid = ExecutionError(f"worker {worker.worker_id} died: {exc}"), worker.worker_id
                continue  # a sibling takes the job now: no backoff
            except RayError as exc:  # the call failed, not the worker (e.g. a reply that did not unpickle)
                logger.warning(
                    "[pool] call failed worker=%s attempt=%d", worker.worker_id, attempts, exc_info=exc
                )
                reply = JobReply(error=ExecutionError(f"{type(exc).__name__}: {exc}"))
            if reply is None:
                raise group.deadline_error(attempts, last_error)
            if reply.error is None or reply.error.is_task_error:
                return JobResult(
                    reply.files, reply.result, reply.error, worker.worker_id, attempts, reply.engine_s
                )
            logger.info(
                "[pool] retrying worker=%s attempt=%d error=%s", worker.worker_id, attempts, reply.error
            )
            last_error, avoid = reply.error, worker.worker_id
            await asyncio.sleep(max(0.0, min(backoff_s, deadline_unix_s - time.time())))
            backoff_s = min(2 * backoff_s, BACKOFF_MAX_S)

    async def _dispatch(
        self, group: CardGroup, worker: WorkerState, request: JobRequest, deadline_unix_s: float
    ) -> JobReply | None:
        """The worker's reply, or None past the deadline (the job runs on; its slot frees when it ends)."""
        handle = worker.handle
        job = dataclasses.replace(request, deadline_unix_s=deadline_unix_s)  # the engine stops there too
        reply = ray_future(handle.run_job.remote(job))
        reply.add_done_callback(lambda done: self._on_reply(group, worker, handle, done))
        finished, _ = await asyncio.wait({reply}, timeout=max(0.0, deadline_unix_s - time.time()))
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
