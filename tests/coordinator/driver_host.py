"""The coordinator in a Ray actor with an in-process job runner: what round drivers need to call back (the
product's ``CoordinatorActor`` does the same with the Ray worker pool). Used by the round-driver tests and
benchmarks/control_plane.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from cluster.chain.accounts import OperatorKeys
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings
from cluster.coordinator.drivers.fleet import DriverHost
from cluster.coordinator.scheduling.runner import JobRunner
from cluster.status.model import CoordinatorStatus


class CrashOnce:
    """A failpoint that ends its process the first time any round reaches ``point`` (a marker file makes
    it once across the restart, which runs the same code with the same settings)."""

    def __init__(self, point: str, marker: Path):
        self.point = point
        self.marker = marker

    def __call__(self, point: str, subject: str) -> None:
        if point == self.point and not self.marker.exists():
            self.marker.write_text(f"{os.getpid()} {subject}\n")
            os._exit(137)


@ray.remote(num_cpus=0)
class CoordinatorHost(DriverHost):
    def __init__(self, settings: CoordinatorSettings, mnemonic: str, make_pool: Callable[[], JobRunner]):
        self.coordinator = Coordinator(settings, OperatorKeys.from_mnemonic(mnemonic), make_pool())
        self._ready = False
        self._stop = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def hosted_coordinator(self) -> Coordinator | None:
        return self.coordinator if self._ready else None

    async def start(self) -> list[int]:
        """Started, its nodes joined, its loop running; the drivers' process ids."""
        await self.coordinator.start()
        self._ready = True
        await self.coordinator.join_nodes()
        self._loop = asyncio.create_task(self.coordinator.run(self._stop))
        return await self.coordinator.driver_pids()

    async def driver_pids(self) -> list[int]:
        return await self.coordinator.driver_pids()

    async def status(self) -> CoordinatorStatus:
        await self.coordinator.rounds.refresh()
        return self.coordinator.status()

    async def call(self, method: str, *args: Any) -> Any:
        """Any other coroutine method of the coordinator (benchmarks read what they measure)."""
        return await getattr(self.coordinator, method)(*args)

    async def profile_start(self) -> None:
        """cProfile over the actor's event loop (the coordinator's own work), until ``profile_stop``."""
        import cProfile

        self._profile = cProfile.Profile()
        self._profile.enable()

    async def profile_stop(self, path: str) -> None:
        self._profile.disable()
        self._profile.dump_stats(path)

    async def stop(self) -> CoordinatorStatus:
        self._stop.set()
        if self._loop is not None:
            await self._loop
        await self.coordinator.stop(drain=False, close=False)
        final = await self.status()
        await self.coordinator.close()
        return final
