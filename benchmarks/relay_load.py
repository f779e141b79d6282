"""What benchmarks/relay_throughput.py drives its relays with: tasks put straight into a relay's tables,
pre-signed requests sent with a fixed number in flight, and the CPU a process spent meanwhile."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from eth_account import Account

from cluster.protocol.hashes import task_hash
from cluster.protocol.signing import bound_params, sign_request
from network.relay.files import FileStore
from network.relay.store import RelayStore

CREATOR, NODE = Account.create(), Account.create()


def gpt_args(size: int, salt: int) -> str:
    head = '{"model": "m", "messages": [{"role": "user", "content": "'
    tail = f'"}}], "seed": {salt}}}'
    return head + "x" * max(1, size - len(head) - len(tail)) + tail


def fill(
    db_url: str, data_dir: Path, task_ids: range, *, args_size: int, result: bytes | None = None
) -> None:
    """Tasks as the follower would have recorded them: NODE selected; their arguments uploaded when no
    ``result`` is given (for downloads), or validated with ``result`` (for the uploads of a client)."""
    store, files = RelayStore(db_url), FileStore(data_dir / "files")
    try:
        for task_id in task_ids:
            args = gpt_args(args_size, task_id)
            store.saw_task(task_id, 1, CREATOR.address, task_hash(args))
            store.saw_selection(task_id, 0, NODE.address)
            if result is None:
                files.write_args(task_id, args.encode())
                store.mark_args_uploaded(task_id)
            else:
                store.saw_success(task_id, hashlib.sha256(result).digest(), NODE.address)
    finally:
        store.close()


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def process_cpu_s(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    requests: int
    seconds: float
    relay_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def relay_cpu_ms_per_request(self) -> float:
        return 1000 * self.relay_cpu_s / self.requests


async def signed_gets(
    base_urls: list[str], task_ids: range, *, requests: int, in_flight: int, relay_pids: list[int]
) -> LoadResult:
    """``requests`` argument downloads signed by NODE, spread over ``base_urls`` in turn, ``in_flight`` at
    once. Signed beforehand: the figure is the relays', not this client's signing."""
    timestamp = int(time.time())
    urls = []
    for n, base in zip(range(requests), itertools.cycle(base_urls)):
        task_id = task_ids[n % len(task_ids)]
        params = bound_params("GET", f"/v1/inference_tasks/{task_id}", {"task_id": task_id})
        _, signature = sign_request(params, NODE.key, timestamp)
        urls.append(f"{base}/v1/inference_tasks/{task_id}?timestamp={timestamp}&signature={signature}")
    limit = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> None:
            async with limit, session.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {body[:200]!r}")

        await asyncio.gather(*(get(u) for u in urls[: 2 * in_flight]))  # connections open, caches warm
        cpu_before = sum(process_cpu_s(pid) for pid in relay_pids)
        started = time.perf_counter()
        await asyncio.gather(*(get(u) for u in urls))
        seconds = time.perf_counter() - started
    relay_cpu_s = sum(process_cpu_s(pid) for pid in relay_pids) - cpu_before
    return LoadResult(requests=requests, seconds=seconds, relay_cpu_s=relay_cpu_s)
