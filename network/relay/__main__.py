"""``python -m network.relay``: run the relay against a chain.

Examples:
    python -m network.relay --rpc-url http://127.0.0.1:8545 --deployment .devnet/deployment.json
    python -m network.relay --rpc-url https://rpc.example --task-address 0x... --data-dir /srv/relay

With HELIUM_RELAY_RECEIPT_KEY set, every argument upload is answered with the relay's signed receipt
(cluster/protocol/receipts.py), for the chain of the deployment file or of --chain-id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from cluster import envs
from cluster.chain.deploy import Deployment
from network.relay.config import RelayConfig
from network.relay.service import RelayService


def parse_config(argv: list[str] | None = None) -> RelayConfig:
    parser = argparse.ArgumentParser(prog="python -m network.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpc-url", required=True, help="the chain's JSON-RPC endpoint")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--deployment", type=Path, help="deployment JSON written by the devnet / deploy step")
    where.add_argument("--task-address", help="address of the Task contract")
    parser.add_argument("--node-address", help="address of the Node contract (for GET /v1/network)")
    parser.add_argument("--chain-id", type=int, help="the chain id receipts name (a deployment file has it)")
    parser.add_argument("--data-dir", type=Path, default=Path(".relay"))
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data dir)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8008)
    parser.add_argument("--start-block", type=int, default=0, help="first block to follow (the deployment's)")
    parser.add_argument("--confirmations", type=int, default=0)
    parser.add_argument("--retention-s", type=float, default=24 * 3600.0)
    parser.add_argument("--poll-interval-s", type=float, default=1.0, help="chain polls and lease tries")
    args = parser.parse_args(argv)
    addresses = {"task_address": args.task_address, "node_address": args.node_address}
    if args.deployment is not None:
        try:
            deployment = Deployment.load(args.deployment)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--deployment {args.deployment}: cannot be read: {exc}")
        addresses = {"task_address": deployment.address("Task"), "node_address": deployment.address("Node")}
        args.start_block = max(args.start_block, deployment.block_number)
        args.chain_id = args.chain_id or deployment.chain_id
    try:
        return RelayConfig(
            rpc_url=args.rpc_url, data_dir=args.data_dir, database_url=args.database_url, host=args.host,
            port=args.port, start_block=args.start_block, confirmations=args.confirmations,
            retention_s=args.retention_s, poll_interval_s=args.poll_interval_s, chain_id=args.chain_id,
            receipt_key=envs.RELAY_RECEIPT_KEY.get(), **addresses,
        )  # fmt: skip
    except ValidationError as exc:
        parser.error(str(exc))
        raise


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = parse_config(argv)
    print(
        f"[relay] serving on http://{config.host}:{config.port} data_dir={config.data_dir}", file=sys.stderr
    )
    asyncio.run(RelayService(config).serve())


if __name__ == "__main__":
    main()
