"""The bridge served by uvicorn in a background thread (the devnet, the tests)."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn
from fastapi import FastAPI

from network.connection_limits import ConnectionLimits, uvicorn_options


class RunningBridge:
    """``with RunningBridge(app, port=0) as bridge: bridge.url``: uvicorn on loopback, its own loop, with the
    app's connection limits (``create_bridge`` sets them from the config)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        limits = getattr(app.state, "connection_limits", None) or ConnectionLimits()
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", **uvicorn_options(limits))
        self.server = uvicorn.Server(config)
        self.host = host
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def url(self) -> str:
        (server,) = self.server.servers
        port = server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def start(self, timeout_s: float = 30.0) -> RunningBridge:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the bridge failed to start (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError("the bridge did not start in time")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> RunningBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
