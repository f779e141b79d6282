"""benchmarks/relay_throughput.py's last table: every operation through the cluster's RelayClient, the way
nodes and applications call the relay (each request signed as it is sent), small and 10 MB files."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.relay_load import CREATOR, NODE, fill, gpt_args
from cluster.relay import RelayClient

if TYPE_CHECKING:
    from benchmarks.relay_throughput import Bench

SIZES = {"1 KiB": 1024, "10 MB": 10 * 1000 * 1000}
MAX_ARGS = 8 * 1024 * 1024 - 1024  # the relay's limit on arguments (8 MiB), less the JSON around them


async def rate(count: int, in_flight: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Operations per second for ``op(0) .. op(count - 1)``, ``in_flight`` at once."""
    limit = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with limit:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - started)


async def every_operation(
    url: str, task_ids: range, size: int, blob: bytes, in_flight: int
) -> dict[str, float]:
    first, count = task_ids[0], len(task_ids)
    args = [gpt_args(min(size, MAX_ARGS), first + i) for i in range(count)]
    async with RelayClient(url, CREATOR) as creator, RelayClient(url, NODE) as node:
        return {
            "args_upload": await rate(count, in_flight, lambda i: creator.upload_args(first + i, args[i])),
            "args_download": await rate(count, in_flight, lambda i: node.get_args(first + i)),
            "result_upload": await rate(count, in_flight, lambda i: node.upload_results(first + i, [blob])),
            "result_download": await rate(count, in_flight, lambda i: creator.get_result(first + i, 0)),
        }


def client_rows(bench: Bench) -> list[dict[str, Any]]:
    rows = []
    for database in bench.databases:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            db_url = bench.database_url(database, data_dir)
            next_id = 0
            with bench.relays(data_dir, db_url, 1) as (relay,):
                for label, size in SIZES.items():
                    count = max(4, int((200 if size < 100_000 else 12) * bench.scale))
                    blob = os.urandom(size)
                    for in_flight in (1, 8):
                        task_ids = range(next_id, next_id + count)
                        next_id += count
                        fill(db_url, data_dir, task_ids, args_size=min(size, MAX_ARGS), result=blob)
                        rates = asyncio.run(every_operation(relay.url, task_ids, size, blob, in_flight))
                        row = {"database": database, "size": label, "in_flight": in_flight, "count": count}
                        rows.append(row | {k: round(v, 1) for k, v in rates.items()})
                        print("client", rows[-1], flush=True)
    return rows
