"""``create_bridge``: the FastAPI app of the bridge (API, chat page) and its life cycle."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from cluster.chain.crypto_backend import log_signing_backend
from cluster.chain.deploy import Deployment
from cluster.protocol.task import MAX_TASK_ARGS_BYTES
from network.app import ApplicationClient, ClientSettings
from network.bridge import native_api, openai_api
from network.bridge.config import BridgeConfig
from network.bridge.errors import BridgeError, on_bridge_error, on_http_error, on_validation_error
from network.bridge.keys import KeyRing
from network.bridge.manager import TaskManager
from network.bridge.service import Bridge
from network.bridge.tasks import TaskStore
from network.request_limits import RequestLimits, RouteLimit

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)
AppClientFactory = Callable[[BridgeConfig], ApplicationClient]


def default_app_client(config: BridgeConfig, account: LocalAccount) -> AppClientFactory:
    """An ApplicationClient on the config's chain and relay, its state beside the bridge's records."""

    def make(config: BridgeConfig) -> ApplicationClient:
        return ApplicationClient(
            config.rpc_url, Deployment.load(config.deployment_file), config.relay_url, account,
            config.data_dir / "app", settings=ClientSettings(poll_interval_s=config.poll_interval_s),
        )  # fmt: skip

    return make


def create_bridge(
    config: BridgeConfig,
    app_client_factory: AppClientFactory | None = None,
    *,
    account: LocalAccount | None = None,
) -> FastAPI:
    """The bridge app. Pass ``account`` (the paying wallet) or an ``app_client_factory`` that holds one."""
    if app_client_factory is None:
        if account is None:
            raise ValueError("create_bridge needs the wallet account or an app_client_factory")
        app_client_factory = default_app_client(config, account)
    factory = app_client_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_signing_backend(log, "bridge")
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = TaskStore(config.data_dir)
        async with factory(config) as client:
            await client.resume_pending()
            manager = TaskManager(config, client, store)
            app.state.bridge = Bridge(config, manager)
            await manager.start()
            try:
                yield
            finally:
                await manager.stop()
                store.close()

    app = FastAPI(title="Helium bridge", lifespan=lifespan)
    upload_bytes = 2 * MAX_TASK_ARGS_BYTES + 64 * 1024  # task arguments as a JSON string, and the fields
    app.add_middleware(
        RequestLimits,
        routes=[
            RouteLimit("POST", re.compile(path), upload_bytes)
            for path in (r"/v1/chat/completions", r"/v1/chat/tasks", r"/v1/tasks")
        ],
        refusal=lambda status, message: json.dumps(BridgeError(status, message).body()).encode(),
    )  # every other route takes a small JSON body at most
    app.state.connection_limits = config.connection_limits  # RunningBridge serves with them
    app.state.keys = KeyRing(config.api_keys)
    app.add_exception_handler(BridgeError, on_bridge_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.include_router(openai_api.router)
    app.include_router(native_api.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
