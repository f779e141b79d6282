"""benchmarks/relay_throughput.py --uploads: 8 MiB argument uploads to one relay, this checkout's and
another's (``--before DIR``: e.g. ``git worktree add /tmp/before f88b13f``), in turns on one machine.

The uploads are signed beforehand by the load generator, so the figures are the relay's: uploads a second
with one in flight, and the relay's CPU per upload (user and system time, from /proc), which a busy
machine disturbs less. Each code runs ``rounds`` times, alternating; the table gives the median.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from benchmarks.relay_clients import MAX_ARGS
from benchmarks.relay_load import CREATOR, NODE, LoadResult, gpt_args, load_1m, process_cpu_s
from cluster.protocol.hashes import task_hash
from cluster.protocol.signing import bound_params, sign_request
from network.relay.store import RelayStore

if TYPE_CHECKING:
    from benchmarks.relay_throughput import Bench

UPLOADS_PER_ROUND = 8


def signed_bodies(task_ids: range) -> list[bytes]:
    """One upload body per task, each with its own arguments (MAX_ARGS long), signed by the creator."""
    timestamp = int(time.time())
    bodies = []
    for task_id in task_ids:
        args = gpt_args(MAX_ARGS, task_id)
        params = bound_params("POST", "/v1/inference_tasks", {"task_id": task_id, "task_args": args})
        _, signature = sign_request(params, CREATOR.key, timestamp)
        bodies.append(json.dumps({"task_id": task_id, "task_args": args, "timestamp": timestamp,
                                  "signature": signature}).encode())  # fmt: skip
    return bodies


def seen_tasks(db_url: str, task_ids: range) -> None:
    """The tasks as the follower records them from the chain, nothing uploaded yet."""
    store = RelayStore(db_url)
    try:
        for task_id in task_ids:
            store.saw_task(task_id, 1, CREATOR.address, task_hash(gpt_args(MAX_ARGS, task_id)))
            store.saw_selection(task_id, 0, NODE.address)
    finally:
        store.close()


async def post_all(url: str, bodies: list[bytes], relay_pid: int) -> LoadResult:
    """The uploads one after another (one in flight): what one application sees."""
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        cpu_before = process_cpu_s(relay_pid)
        started = time.perf_counter()
        for body in bodies:
            async with session.post(f"{url}/v1/inference_tasks", data=body) as response:
                answer = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {answer[:300]!r}")
        seconds = time.perf_counter() - started
    return LoadResult(
        requests=len(bodies), seconds=seconds, relay_cpu_s=process_cpu_s(relay_pid) - cpu_before
    )


def one_round(bench: Bench, code_dir: Path | None, bodies: list[bytes], task_ids: range) -> LoadResult:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        db_url = bench.database_url("sqlite", data_dir)
        seen_tasks(db_url, task_ids)
        with bench.relays(data_dir, db_url, 1, code_dir=code_dir) as (relay,):
            return asyncio.run(post_all(relay.url, bodies, relay.pid))


def upload_rows(bench: Bench, codes: dict[str, Path | None], rounds: int = 3) -> list[dict[str, Any]]:
    """A row per code: ``codes`` maps a label to a checkout (None: this one)."""
    task_ids = range(UPLOADS_PER_ROUND)
    bodies = signed_bodies(task_ids)
    results: dict[str, list[LoadResult]] = {label: [] for label in codes}
    loads: dict[str, list[float]] = {label: [] for label in codes}
    for _ in range(rounds):
        for label, code_dir in codes.items():
            loads[label].append(load_1m())
            results[label].append(one_round(bench, code_dir, bodies, task_ids))
            loads[label].append(load_1m())
            print("8 MiB uploads", label, results[label][-1], flush=True)
    return [summary(label, results[label], loads[label], rounds) for label in codes]


def summary(label: str, results: list[LoadResult], loads: list[float], rounds: int) -> dict[str, Any]:
    return {
        "code": label,
        "uploads": UPLOADS_PER_ROUND * rounds,
        "per_s": round(statistics.median(r.per_s for r in results), 2),
        "relay_cpu_ms_per_upload": round(statistics.median(r.relay_cpu_ms_per_request for r in results)),
        "load_1m_min": min(loads),
        "load_1m_max": max(loads),
    }
