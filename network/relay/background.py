"""Runs a real relay (uvicorn on a loopback port, follower, retention) in a background thread: for the
local network, tests and benchmarks, where the relay shares a process with its users."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from network.relay.config import RelayConfig
from network.relay.service import RelayService


class RunningRelay:
    def __init__(self, config: RelayConfig, task_abi: Sequence[Mapping[str, Any]] | None = None):
        self.config = config
        self.task_abi = task_abi
        self.service: RelayService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        assert self.service is not None and self.service.bound_port is not None
        return f"http://127.0.0.1:{self.service.bound_port}"

    def start(self, timeout_s: float = 20.0) -> RunningRelay:
        ready = threading.Event()

        def main() -> None:
            async def serve() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self.service = RelayService(self.config, task_abi=self.task_abi)
                ready.set()
                await self.service.serve(self._stop)

            try:
                asyncio.run(serve())
            except BaseException as exc:  # surfaced by start() / stop()
                self._error = exc
                ready.set()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self._error is None and (self.service is None or self.service.bound_port is None):
            if time.monotonic() > deadline:
                raise TimeoutError("the relay did not start")
            time.sleep(0.02)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=20)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> RunningRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
