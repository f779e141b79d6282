"""The relay's HTTP app (PROTOCOL.md, Relay API): the signed task endpoints (``tasks_api``), the network
statistics (``stats``), the error envelope and the body size limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from network.relay import tasks_api
from network.relay.access import RelayAccess
from network.relay.config import RelayConfig
from network.relay.errors import install_error_handlers
from network.relay.files import FileStore
from network.relay.limits import BodySizeLimit
from network.relay.store import RelayStore


def create_app(
    config: RelayConfig,
    store: RelayStore,
    files: FileStore,
    *,
    stats: Any = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    app = FastAPI(title="Helium relay", version="1", responses={400: {"model": tasks_api.Envelope}})
    app.state.relay = RelayAccess(config, store, files, clock)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)
    app.include_router(tasks_api.router)
    if stats is not None:
        stats.install(app)
    return app
