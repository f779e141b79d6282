"""The relay's HTTP app (PROTOCOL.md, Relay API): the signed task endpoints (``tasks_api``), the network
statistics (``stats``), this replica's status, the error envelope and the body size limit."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from cluster.chain.crypto_backend import signing_backend
from network.relay import tasks_api
from network.relay.access import RelayAccess
from network.relay.config import RelayConfig
from network.relay.errors import envelope, install_error_handlers
from network.relay.files import FileStore
from network.relay.follower import CURSOR_NAME, ChainFollower
from network.relay.store import RelayStore
from network.request_limits import RequestLimits, RouteLimit


def create_app(
    config: RelayConfig,
    store: RelayStore,
    files: FileStore,
    *,
    stats: Any = None,
    follower: ChainFollower | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    app = FastAPI(title="Helium relay", version="1", responses={400: {"model": tasks_api.Envelope}})
    app.state.relay = RelayAccess(config, store, files, clock)
    install_error_handlers(app)
    app.add_middleware(
        RequestLimits,
        routes=[
            RouteLimit("POST", re.compile(r"/v1/inference_tasks"), config.max_args_request_bytes),
            RouteLimit(
                "POST",
                re.compile(r"/v1/inference_tasks/[^/]+/results"),
                max_multipart_bytes=config.max_results_request_bytes,
            ),
        ],
        refusal=lambda status, message: json.dumps(envelope(message)).encode(),
    )  # every other route takes no upload: a small JSON body at most
    app.include_router(tasks_api.router)
    if stats is not None:
        stats.install(app)
    backend = signing_backend()

    @app.get("/v1/relay")
    async def relay_status() -> dict[str, Any]:
        """This replica: whether it holds the follower's lease, how far the shared tables have read, and
        why following the chain fails, while it does."""
        next_block = await store.get_cursor_async(CURSOR_NAME)
        following = follower is not None and follower.following
        failure = None if follower is None else follower.failure
        return envelope(
            "ok",
            {"following": following, "next_block": next_block, "follow_failure": failure,
             "signing_backend": backend},
        )  # fmt: skip

    return app
