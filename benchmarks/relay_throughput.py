"""Relay throughput on loopback: signed uploads and downloads per second, small files and 10 MB files.

The relay runs for real (uvicorn, SQLite, files on disk, following a real anvil); the tasks it serves are
fed into its store directly so that the measurement is the data path, not the chain. Each operation is a
separate signed request through the cluster's RelayClient, one at a time and then 8 at once.

    python benchmarks/relay_throughput.py [--out benchmarks/results/relay_throughput.md]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import tempfile
import time
from pathlib import Path

from eth_account import Account

from cluster.chain.anvil import Anvil
from cluster.protocol.hashes import task_hash
from cluster.relay import RelayClient
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig

CREATOR, NODE = Account.create(), Account.create()
SIZES = {"small (1 KiB)": 1024, "10 MB": 10 * 1000 * 1000}


def gpt_args(size: int, salt: int) -> str:
    head = '{"model": "m", "messages": [{"role": "user", "content": "'
    tail = f'"}}], "seed": {salt}}}'
    return head + "x" * max(1, size - len(head) - len(tail)) + tail


async def run_ops(count: int, concurrency: int, op) -> float:
    """Operations per second for ``count`` calls of ``op(i)``, ``concurrency`` in flight."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def measure(
    relay: RunningRelay, size: int, count: int, concurrency: int, base_id: int
) -> dict[str, float]:
    store = relay.service.store
    args = [gpt_args(min(size, 8 * 1024 * 1024 - 1024), base_id + i) for i in range(count)]
    blob = os.urandom(size)
    for i in range(count):
        store.saw_task(base_id + i, 1, CREATOR.address, task_hash(args[i]))
        store.saw_selection(base_id + i, 0, NODE.address)
        store.saw_success(base_id + i, hashlib.sha256(blob).digest(), NODE.address)
    async with RelayClient(relay.url, CREATOR) as creator, RelayClient(relay.url, NODE) as node:
        return {
            "args upload": await run_ops(
                count, concurrency, lambda i: creator.upload_args(base_id + i, args[i])
            ),
            "args download": await run_ops(count, concurrency, lambda i: node.get_args(base_id + i)),
            "result upload": await run_ops(
                count, concurrency, lambda i: node.upload_results(base_id + i, [blob])
            ),
            "result download": await run_ops(
                count, concurrency, lambda i: creator.get_result(base_id + i, 0)
            ),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "relay_throughput.md")
    options = parser.parse_args()
    rows = []
    with Anvil() as anvil, tempfile.TemporaryDirectory() as data_dir:
        config = RelayConfig(
            rpc_url=anvil.rpc_url, task_address=Account.create().address, data_dir=Path(data_dir), port=0
        )
        with RunningRelay(config, task_abi=[]) as relay:
            base_id = 0
            for label, size in SIZES.items():
                count = 200 if size < 100_000 else 12
                for concurrency in (1, 8):
                    rates = asyncio.run(measure(relay, size, count, concurrency, base_id))
                    base_id += count
                    rows.append((label, concurrency, rates))
                    print(label, concurrency, {k: round(v, 1) for k, v in rates.items()})
    lines = [
        "# Relay throughput (loopback)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "relay and client in one process (uvicorn in a thread), SQLite, files on local disk.",
        "Operations per second; each operation is one signed request (arguments are capped at the relay's",
        "8 MiB limit, so the 10 MB row uploads 8 MiB of arguments and 10 MB result files).",
        "",
        "| file size | in flight | args upload/s | args download/s | result upload/s | result download/s | "
        "result MB/s up | result MB/s down |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, concurrency, r in rows:
        mb = SIZES[label] / 1e6
        lines.append(
            f"| {label} | {concurrency} | {r['args upload']:.1f} | {r['args download']:.1f} | "
            f"{r['result upload']:.1f} | {r['result download']:.1f} | {r['result upload'] * mb:.1f} | "
            f"{r['result download'] * mb:.1f} |"
        )
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {options.out}")


if __name__ == "__main__":
    main()
