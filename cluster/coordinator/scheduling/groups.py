"""A card model's group of workers as the pool schedules it: who is free, who goes next, who waits.

Everything here runs on the coordinator's event loop only, so no locks: a job takes a place in
``acquire`` and gives it back in ``release``, which wakes the jobs waiting in line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cluster.coordinator.scheduling.placement import WorkerPlacement
from cluster.coordinator.scheduling.runner import JobDeadlineExceeded
from cluster.protocol.cards import CardModel
from cluster.protocol.errors import TaskExecutionError
from cluster.workers.messages import JobReply


@dataclass(slots=True, eq=False)
class WorkerState:
    placement: WorkerPlacement
    handle: Any  # the GpuWorker actor handle; swapped when the worker is replaced
    num_running: int = 0
    num_jobs: int = 0
    loaded_models: frozenset[str] = frozenset()
    is_alive: bool = True
    is_draining: bool = False  # its machine is draining: no new job
    is_gone: bool = False  # its machine was lost or drained: never brought back
    has_served: bool = False  # answered once: a crash and a restart do not take its places away

    def serves(self, loaded_models: Iterable[str]) -> None:
        """It answered: in rotation, with the models it holds."""
        self.loaded_models, self.is_alive, self.has_served = frozenset(loaded_models), True, True

    @property
    def worker_id(self) -> str:
        return self.placement.name


@dataclass(slots=True, eq=False)
class CardGroup:
    card: CardModel
    workers: list[WorkerState] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)  # jobs waiting for a free place

    def find(self, worker_id: str) -> WorkerState | None:
        return next((w for w in self.workers if w.worker_id == worker_id), None)

    def pick(self, hint: str | None, avoid: str, only: str | None) -> WorkerState | None:
        """The free worker to run a job: a holder of ``hint`` first, then the least busy."""
        free = [
            w
            for w in self.workers
            if w.is_alive
            and not w.is_draining
            and w.num_running < w.placement.num_places
            and only in (None, w.worker_id)
        ]
        # A retry goes to a sibling when one is free, else back to the worker that failed.
        candidates = [w for w in free if w.worker_id != avoid] or free
        if not candidates:
            return None
        return min(
            candidates,
            key=lambda w: (hint not in w.loaded_models, w.num_running, w.num_jobs, w.placement.index),
        )

    async def acquire(
        self, deadline_unix_s: float, hint: str | None, avoid: str = "", only: str | None = None
    ) -> WorkerState | None:
        """A worker with a place taken for the caller, waiting in line while all are busy or down;
        None once the deadline passes."""
        while (remaining_s := deadline_unix_s - time.time()) > 0:
            worker = self.pick(hint, avoid, only)
            if worker is not None:
                worker.num_running += 1
                return worker
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            await asyncio.wait({waiter}, timeout=remaining_s)
            if not waiter.done():  # timed out: leave the line
                waiter.cancel()
                self.waiters.remove(waiter)
        return None

    def release(self, worker: WorkerState, reply: asyncio.Future[JobReply]) -> None:
        """Give the place back when the worker's call ended, however it ended."""
        worker.num_running -= 1
        worker.num_jobs += 1
        if not reply.cancelled() and reply.exception() is None:
            worker.loaded_models = reply.result().loaded_models
        self.wake()

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def deadline_error(self, attempts: int, last_error: TaskExecutionError | None) -> JobDeadlineExceeded:
        num_busy = sum(w.num_running > 0 for w in self.workers)
        num_down = sum(not w.is_alive for w in self.workers)
        last = f"; last error: {last_error}" if last_error else ""
        return JobDeadlineExceeded(
            f"job for card model {self.card.short_id} ({self.card.gpu_name}) missed its deadline after "
            f"{attempts} attempt(s); of {len(self.workers)} workers {num_busy} busy, {num_down} down{last}",
            attempts=attempts,
            last_error=last_error,
        )
