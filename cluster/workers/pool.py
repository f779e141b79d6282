"""The coordinator's handle on the GPU workers: one group per card model, jobs queued per group.

All of the pool's state lives on the coordinator's event loop and is changed only there (Ray's reply
callbacks are delivered on the loop too), so no locks. A job for a card model runs on any worker of that
group: the pool prefers one that already holds the task's model, retries a transient failure (RETRY
action) with backoff on a sibling until the deadline, replaces a dead worker in the background, and
returns a task error (REPORT action) at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

import ray
from ray.exceptions import RayError

from cluster.config import EngineConfig, RigConfig
from cluster.protocol.errors import ExecutionError, error_from_dict
from cluster.workers.faults import checked_faults
from cluster.workers.gpu import CardModel
from cluster.workers.jobs import CardGroup, JobDeadlineExceeded, JobResult, WorkerState
from cluster.workers.layout import (
    PoolError,
    WorkerSlot,
    actor_options,
    check_cluster_resources,
    discovered_cards,
    plan_slots,
    virtual_cards,
)
from cluster.workers.recovery import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    WORKER_LOST_ERRORS,
    bring_back,
    ray_future,
)
from cluster.workers.worker import GpuWorker

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0

__all__ = ["JobDeadlineExceeded", "JobResult", "PoolError", "WorkerPool"]


class WorkerPool:
    def __init__(self, rig: RigConfig, engine: EngineConfig, namespace: str, faults: dict[int, dict]) -> None:
        self.rig = rig
        self.engine = engine
        self.namespace = namespace
        self._faults = faults
        self._groups: dict[bytes, CardGroup] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._is_shut_down = False

    @classmethod
    async def create(
        cls,
        rig: RigConfig,
        engine: EngineConfig,
        *,
        namespace: str = "helium",
        faults: dict[int, dict] | None = None,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> WorkerPool:
        """Get or create one worker per GPU (virtual GPU on the CPU rig) and wait until all are up."""
        if not ray.is_initialized():
            raise PoolError("connect to Ray (ray.init) before WorkerPool.create")
        cards = await discovered_cards(engine) if rig.discover_gpus else virtual_cards(rig, engine)
        slots = plan_slots(cards)
        check_cluster_resources(slots, ray.cluster_resources())
        pool = cls(rig, engine, namespace, checked_faults(faults or {}, len(slots)))
        for slot in slots:
            group = pool._groups.setdefault(slot.card.key, CardGroup(slot.card, rig.slots_per_gpu))
            group.workers.append(WorkerState(slot, pool._spawn(slot)))
        await pool._wait_ready(ready_timeout_s)
        return pool

    def _spawn(self, slot: WorkerSlot) -> Any:
        options = actor_options(slot, self.rig, self.namespace)
        fault = self._faults.get(slot.index)
        return GpuWorker.options(**options).remote(
            slot.card, slot.index, slot.name, self.rig, self.engine, fault
        )

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

    def card_models(self) -> dict[bytes, CardModel]:
        return {key: group.card for key, group in self._groups.items()}

    def num_gpus(self, card_key: bytes) -> int:
        return len(self._group(card_key).workers)

    def num_alive(self, card_key: bytes) -> int:
        return sum(w.is_alive for w in self._group(card_key).workers)

    def worker_ids(self, card_key: bytes) -> list[str]:
        return [w.worker_id for w in self._group(card_key).workers]

    async def workers_info(self) -> list[dict[str, Any]]:
        """Each alive worker's own ``info()`` (card model, index, busy flag, counters)."""
        alive = [w for w in self._all_workers() if w.is_alive]
        return list(await asyncio.gather(*(ray_future(w.handle.info.remote()) for w in alive)))

    def _group(self, card_key: bytes) -> CardGroup:
        if card_key not in self._groups:
            known = [key.hex()[:8] for key in self._groups]
            raise KeyError(f"no workers of card model {card_key.hex()[:8]}; this farm has {known}")
        return self._groups[card_key]

    def _all_workers(self) -> list[WorkerState]:
        return [w for group in self._groups.values() for w in group.workers]

    # --- jobs ---

    async def run_job(
        self,
        card_key: bytes,
        task_type: int,
        args_json: str,
        *,
        deadline: float,
        model_hint: str | None = None,
    ) -> JobResult:
        """Run one task on a worker of ``card_key`` before ``deadline`` (Unix time, seconds)."""
        return await self._run(self._group(card_key), task_type, args_json, deadline, model_hint, None)

    async def run_job_on(
        self, worker_id: str, task_type: int, args_json: str, *, deadline: float
    ) -> JobResult:
        """Run one task on this very worker (the guard compares workers); transient errors retried there."""
        for group in self._groups.values():
            if group.find(worker_id) is not None:
                return await self._run(group, task_type, args_json, deadline, None, worker_id)
        raise KeyError(f"no worker {worker_id!r} in this pool")

    async def _run(
        self,
        group: CardGroup,
        task_type: int,
        args_json: str,
        deadline: float,
        hint: str | None,
        only: str | None,
    ) -> JobResult:
        attempts, last_error, avoid, backoff_s = 0, None, "", BACKOFF_INITIAL_S
        while True:
            if self._is_shut_down:
                raise PoolError("the worker pool is shut down")
            worker = await group.acquire(deadline, hint, avoid, only)
            if worker is None:
                raise group.deadline_error(attempts, last_error)
            attempts += 1
            try:
                reply = await self._dispatch(group, worker, task_type, args_json, deadline)
            except WORKER_LOST_ERRORS as exc:
                logger.warning("[pool] worker lost worker=%s attempt=%d: %s", worker.worker_id, attempts, exc)
                self._mark_lost(group, worker)
                last_error, avoid = ExecutionError(f"worker {worker.worker_id} died: {exc}"), worker.worker_id
                continue  # a sibling takes the job now: no backoff
            except RayError as exc:  # the call failed, not the worker (e.g. a reply that did not unpickle)
                logger.warning(
                    "[pool] call failed worker=%s attempt=%d", worker.worker_id, attempts, exc_info=exc
                )
                reply = {"ok": False, "error": ExecutionError(f"{type(exc).__name__}: {exc}").to_dict()}
            if reply is None:
                raise group.deadline_error(attempts, last_error)
            if reply["ok"]:
                return JobResult(tuple(reply["files"]), reply["result"], None, worker.worker_id, attempts)
            error = error_from_dict(reply["error"])
            if error.is_task_error:
                return JobResult((), b"", error, worker.worker_id, attempts)
            logger.info("[pool] retrying worker=%s attempt=%d error=%s", worker.worker_id, attempts, error)
            last_error, avoid = error, worker.worker_id
            await asyncio.sleep(max(0.0, min(backoff_s, deadline - time.time())))
            backoff_s = min(2 * backoff_s, BACKOFF_MAX_S)

    async def _dispatch(
        self, group: CardGroup, worker: WorkerState, task_type: int, args_json: str, deadline: float
    ) -> dict[str, Any] | None:
        """The worker's reply, or None past the deadline (the job runs on; its slot frees when it ends)."""
        handle = worker.handle
        reply = ray_future(handle.run_job.remote(task_type, args_json))
        reply.add_done_callback(lambda done: self._on_reply(group, worker, handle, done))
        finished, _ = await asyncio.wait({reply}, timeout=max(0.0, deadline - time.time()))
        return reply.result() if finished else None

    def _on_reply(
        self, group: CardGroup, worker: WorkerState, handle: Any, reply: asyncio.Future[Any]
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
