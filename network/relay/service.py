"""The relay as a running service: the HTTP API, the chain follower and the retention sweep together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn

from cluster.chain.crypto_backend import log_signing_backend
from cluster.chain.rpc import connect
from network.relay.app import create_app
from network.relay.config import RelayConfig
from network.relay.files import FileStore
from network.relay.follower import ChainFollower
from network.relay.lease import follower_lease
from network.relay.stats import NetworkStats
from network.relay.store import RelayStore

log = logging.getLogger(__name__)


def _abi(contract: str) -> Sequence[Mapping[str, Any]]:
    from cluster.chain.artifacts import load_artifact

    return load_artifact(contract).abi


class RelayService:
    def __init__(self, config: RelayConfig, *, task_abi: Sequence[Mapping[str, Any]] | None = None):
        self.config = config
        log_signing_backend(log, "relay")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = RelayStore(config.db_url)
        self.files = FileStore(config.data_dir / "files")
        self.w3 = connect(config.rpc_url)
        task = (config.task_address, task_abi if task_abi is not None else _abi("Task"))
        node = None if config.node_address is None else (config.node_address, _abi("Node"))
        self.follower = ChainFollower(
            self.w3, self.store, follower_lease(self.store.engine), task=task, node=node,
            start_block=config.start_block, confirmations=config.confirmations,
        )  # fmt: skip
        stats = None if node is None else NetworkStats(self.store)
        self.app = create_app(config, self.store, self.files, stats=stats, follower=self.follower)
        self._server: uvicorn.Server | None = None

    def sweep_expired(self, now: float | None = None) -> int:
        """Delete the data of tasks that ended more than ``retention_s`` ago; returns how many."""
        cutoff = (time.time() if now is None else now) - self.config.retention_s
        expired = self.store.ended_before(cutoff)
        for task_id in expired:
            self.files.delete_task(task_id)  # files first: a crash between leaves metadata to retry with
            self.store.delete(task_id)
        return len(expired)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            removed = await asyncio.to_thread(self.sweep_expired)
            if removed:
                log.info("[relay] retention removed=%d", removed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.retention_interval_s)

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or the server is told to exit by a signal)."""
        stop = stop or asyncio.Event()
        server_config = uvicorn.Config(
            self.app, host=self.config.host, port=self.config.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(server_config)
        background = [
            asyncio.create_task(self.follower.run(stop, self.config.poll_interval_s)),
            asyncio.create_task(self._sweep_loop(stop)),
        ]
        watcher = asyncio.create_task(self._exit_on(stop))
        try:
            await self._server.serve()
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.w3.provider.disconnect()
            await self.store.aclose()

    async def _exit_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._server is not None:
            self._server.should_exit = True

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0), once the server started."""
        if self._server is None or not self._server.started:
            return None
        return self._server.servers[0].sockets[0].getsockname()[1]
