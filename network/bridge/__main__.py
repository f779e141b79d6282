"""``python -m network.bridge --rpc-url URL --deployment FILE --relay-url URL [--port 8090] [--config FILE]``

The wallet's private key comes from ``HELIUM_BRIDGE_PRIVATE_KEY``; the API keys from ``--config`` (a JSON
file of BridgeConfig fields: models, api_keys, limits) or ``HELIUM_BRIDGE_API_KEYS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn
from eth_account import Account
from pydantic import ValidationError

from cluster import envs
from network.bridge.app import create_bridge
from network.bridge.config import BridgeConfig
from network.connection_limits import uvicorn_options


def load_config(argv: list[str] | None) -> BridgeConfig:
    parser = argparse.ArgumentParser(prog="python -m network.bridge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--deployment", type=Path, required=True, help="the deployment file (devnet's)")
    parser.add_argument("--relay-url", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--data-dir", type=Path, default=Path(".bridge"))
    parser.add_argument("--config", type=Path, help="JSON: models, api_keys, task_timeout_s, ...")
    options = parser.parse_args(argv)
    fields = json.loads(options.config.read_text()) if options.config else {}
    keys = [k for k in (envs.BRIDGE_API_KEYS.get() or "").split(",") if k]
    fields.setdefault("api_keys", [{"key": k, "name": f"key{i}"} for i, k in enumerate(keys)])
    fields.update(
        rpc_url=options.rpc_url, deployment_file=options.deployment, relay_url=options.relay_url,
        host=options.host, port=options.port, data_dir=options.data_dir,
    )  # fmt: skip
    return BridgeConfig.model_validate(fields)


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ValidationError as exc:
        print(f"bad bridge configuration: {exc}", file=sys.stderr)
        return 2
    key = envs.BRIDGE_PRIVATE_KEY.get()
    if not key:
        print(f"set {envs.BRIDGE_PRIVATE_KEY.name} to the bridge wallet's private key", file=sys.stderr)
        return 2
    app = create_bridge(config, account=Account.from_key(key))
    print(f"bridge: chat page at http://{config.host}:{config.port}/", flush=True)
    options = uvicorn_options(config.connection_limits)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
