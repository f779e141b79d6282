"""Bringing a lost worker back, and what counts as a lost worker.

A worker is lost when its actor died (``ray.kill``, a crash past ``max_restarts``) or its process
crashed mid-call. It comes back under its name: Ray's own restart of it when Ray restarts the process, or
a new actor once the old one is dead and its name free again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ray.exceptions import ActorUnschedulableError, RayActorError, RayError, WorkerCrashedError

from cluster.coordinator.scheduling.groups import CardGroup, WorkerState
from cluster.coordinator.scheduling.placement import WorkerPlacement

logger = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 4.0
NUM_REPLACE_ATTEMPTS = 30
# ActorDiedError and ActorUnavailableError derive from RayActorError; a worker pinned to a machine that
# died cannot be restarted there (ActorUnschedulableError).
WORKER_LOST_ERRORS = (RayActorError, WorkerCrashedError, ActorUnschedulableError)


def ray_future(ref: Any) -> asyncio.Future[Any]:
    """An ObjectRef as a future of the running loop (its callbacks run on the loop)."""
    return asyncio.wrap_future(ref.future())


async def bring_back(spawn: Callable[[WorkerPlacement], Any], group: CardGroup, worker: WorkerState) -> None:
    """Get or create the worker's actor until it answers, then put it back in its group's rotation."""
    delay_s = BACKOFF_INITIAL_S
    for attempt in range(1, NUM_REPLACE_ATTEMPTS + 1):
        if worker.is_gone:  # its machine was lost or drained: nothing to bring back there
            return
        handle = spawn(worker.placement)  # get_if_exists: the old actor while its name is still taken
        try:
            models = await ray_future(handle.loaded_models.remote())
        except (*WORKER_LOST_ERRORS, RayError) as exc:  # a dead machine: its pinned actor is unschedulable
            logger.info("[pool] replacement pending worker=%s attempt=%d: %s", worker.worker_id, attempt, exc)
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, BACKOFF_MAX_S)
            continue
        if worker.is_gone:
            return
        worker.handle = handle
        worker.serves(models)
        logger.info("[pool] worker replaced worker=%s attempt=%d", worker.worker_id, attempt)
        group.wake()
        return
    logger.error("[pool] worker could not be replaced worker=%s; its group runs short", worker.worker_id)
