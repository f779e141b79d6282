"""The phases of benchmarks/cluster_overhead.py: capacity, stages, scheduling (see its docstring)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

from benchmarks.farm_sim import BENCH_CARD, SimulatedPool, join_directly
from cluster.chain.accounts import OperatorKeys
from cluster.chain.anvil import Anvil, free_port
from cluster.chain.deploy import Deployment, deploy_network
from cluster.chain.sender import SenderConfig
from cluster.config import ChainEndpoints
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings

try:
    from cluster.coordinator.round_state import Outcome
except ImportError:  # an earlier version under measurement (HELIUM_BENCH_CODE) kept it in the store
    from cluster.coordinator.store import Outcome  # type: ignore[no-redef,attr-defined]

REPO = Path(__file__).resolve().parents[1]
# The relay and the application run this checkout's code with libsecp256k1 whatever the coordinator
# under measurement runs (an earlier version may be measured with eth-keys' pure-Python backend).
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("ECC_BACKEND_CLASS", "HELIUM_BENCH_CODE")}
BLOCK_TIME_S = 1.0  # a chain with a block time: what a farm meets (anvil's automine builds a block a tx)
# A block holds what a second brings: a busy L2's budget (Base's blocks hold over 100M gas).
BLOCK_GAS_LIMIT = 200_000_000
RESTART_WINDOW_S = 20.0
RESTART_PATIENCE_S = 90.0  # no round paid this long after a restart: recorded as not serving
Account.enable_unaudited_hdwallet_features()


@contextmanager
def network(tmp: Path) -> Iterator[tuple[Anvil, Deployment, str]]:
    """Anvil with a block a second, the contracts, and the relay in its own process."""
    with Anvil(num_accounts=30, block_time_s=BLOCK_TIME_S) as anvil:
        w3 = anvil.web3()
        w3.provider.make_request("evm_setBlockGasLimit", [hex(BLOCK_GAS_LIMIT)])
        deployment = deploy_network(w3, w3.eth.accounts[0])
        deployment.save(tmp / "deployment.json")
        port = free_port()
        command = [
            sys.executable, "-m", "network.relay", "--rpc-url", anvil.rpc_url, "--port", str(port),
            "--deployment", str(tmp / "deployment.json"), "--data-dir", str(tmp / "relay"),
        ]  # fmt: skip
        relay = subprocess.Popen(command, cwd=REPO, env=CHILD_ENV, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for(url)
            yield anvil, deployment, url
        finally:
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=30)


def _wait_for(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}/v1/inference_tasks/0", timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("the relay did not start") from None
            time.sleep(0.2)


def settings(anvil: Anvil, deployment: Deployment, relay_url: str, state_dir: Path, cards: list[Any]) -> Any:
    endpoints = ChainEndpoints(
        rpc_url=anvil.rpc_url, relay_url=relay_url, addresses=dict(deployment.addresses),
        start_block=deployment.block_number,
    )  # fmt: skip
    return CoordinatorSettings(endpoints=endpoints, state_dir=state_dir, cards=cards, sender=SenderConfig())


# -- capacity ---------------------------------------------------------------------------------------------


def num_paid(coordinator: Coordinator) -> int:
    counts = coordinator.store.counts()
    if isinstance(counts, dict):  # an earlier version under measurement: "outcome:<name>" keys
        return counts.get(f"outcome:{Outcome.PAID.value}", 0)
    return counts.ended(Outcome.PAID)


def rpc_calls(coordinator: Coordinator) -> Counter[str]:
    sender_rpc, reader_rpc = coordinator.sender.rpc, coordinator.reader.rpc
    return getattr(sender_rpc, "num_calls", Counter()) + getattr(reader_rpc, "num_calls", Counter())


def farm_gas(coordinator: Coordinator) -> dict[str, Any]:
    """Gas of the farm's transactions from their receipts, failed ones included, per finished task."""
    journal = coordinator.sender.journal
    if not hasattr(journal, "receipts"):
        return {}  # an earlier version kept no receipts
    per_task: Counter[str] = Counter()
    most: Counter[str] = Counter()
    failed = Counter[str]()
    for key, status, gas_used, _ in journal.receipts():
        step, _, rest = key.partition(":")
        most[step] = max(most[step], gas_used)
        if status != "mined":
            failed[step] += 1
        per_task[rest.split(":")[0]] += gas_used
    done = [t for t in per_task if t.startswith("task=") and coordinator.store.of_task(int(t[5:]))]
    gas_per_task = sum(per_task[t] for t in done) / max(len(done), 1)
    return {"gas_per_task": round(gas_per_task), "failed_txs": dict(failed), "most_gas_by_step": dict(most)}


async def window(coordinator: Coordinator, seconds: float, profiler: Any = None) -> dict[str, Any]:
    """Rounds paid, coordinator CPU and RPC calls over ``seconds`` of the running loop (profiled by
    ``profiler``, a benchmarks.overhead_profile.WindowProfiler, when given)."""
    if profiler is not None:
        profiler.start()
    rounds0, cpu0, wall0, calls0 = (
        num_paid(coordinator),
        time.process_time(),
        time.monotonic(),
        rpc_calls(coordinator),
    )
    await asyncio.sleep(seconds)
    rounds = num_paid(coordinator) - rounds0
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    calls = rpc_calls(coordinator) - calls0
    if profiler is not None:
        profiler.stop()
        return {
            "rounds": rounds, "rounds_per_s": round(rounds / wall_s, 1),
            "cpu_ms_per_round": round(1000 * cpu_s / max(rounds, 1), 2),
            "rpc_calls_per_round": round(sum(calls.values()) / max(rounds, 1), 2),
            "rpc_calls_per_round_by_method": {
                m: round(n / max(rounds, 1), 2) for m, n in calls.most_common()
            },
        } | {"profile": profiler.result(rounds, 1000 * cpu_s / max(rounds, 1))}  # fmt: skip
    return {
        "rounds": rounds, "rounds_per_s": round(rounds / wall_s, 1),
        "cpu_ms_per_round": round(1000 * cpu_s / max(rounds, 1), 1),
        # (an earlier version did not count its calls: None)
        "rpc_calls_per_round": round(sum(calls.values()) / max(rounds, 1), 1) if calls else None,
    }  # fmt: skip


async def serve_and_restart(
    config: Any,
    keys: OperatorKeys,
    seconds: float,
    setup: str,
    start_load: Callable[[], object],
    profile: str | None = None,
) -> dict[str, Any]:
    coordinator = Coordinator(config, keys, SimulatedPool())
    await coordinator.start()
    started = time.monotonic()
    await coordinator.join_nodes()
    figures: dict[str, Any] = {
        "bring_up_s": round(time.monotonic() - started, 1) if setup == "bring-up" else None
    }
    start_load()  # once the nodes are up: tasks start at once, none waits in the queue
    stop = asyncio.Event()
    loop = asyncio.create_task(coordinator.run(stop))
    await asyncio.sleep(max(20.0, len(config.cards) / 25))  # warm-up: every slot busy
    if profile is not None:  # the sustained window profiled; no restart
        from benchmarks.overhead_profile import WindowProfiler

        figures |= await window(coordinator, seconds, WindowProfiler(profile, len(config.cards), seconds))
        stop.set()
        await loop
        await coordinator.close()
        return figures
    figures |= await window(coordinator, seconds) | farm_gas(coordinator)
    stop.set()
    await loop
    figures["unfinished_at_restart"] = len(coordinator.store.unfinished())
    await coordinator.close()  # as a crash leaves it: rounds in flight, nothing drained
    started = time.monotonic()
    restarted = Coordinator(config, keys, SimulatedPool())
    await restarted.start()
    await restarted.join_nodes()
    figures["restart_ready_s"] = round(time.monotonic() - started, 2)
    stop = asyncio.Event()
    loop = asyncio.create_task(restarted.run(stop))
    paid_before = num_paid(restarted)
    while num_paid(restarted) == paid_before and time.monotonic() - started < RESTART_PATIENCE_S:
        await asyncio.sleep(0.05)
    if num_paid(restarted) > paid_before:
        figures["restart_first_paid_s"] = round(time.monotonic() - started, 2)
        figures["after_restart"] = await window(restarted, RESTART_WINDOW_S)
    stop.set()
    await loop
    await restarted.close()
    return figures


def run_capacity(slots: int, seconds: float, setup: str, profile: str | None = None) -> dict[str, Any]:
    keys = OperatorKeys.from_mnemonic(Account.create_with_mnemonic()[1])
    with tempfile.TemporaryDirectory() as tmp, network(Path(tmp)) as (anvil, deployment, relay_url):
        w3 = anvil.web3()
        if setup == "direct":
            join_directly(w3, deployment, keys, [BENCH_CARD] * slots)
        w3.provider.make_request("anvil_setBalance", [keys.operator.address, hex(10**27)])
        config = settings(anvil, deployment, relay_url, Path(tmp) / "farm", [BENCH_CARD] * slots)
        budget_s = seconds + RESTART_WINDOW_S + RESTART_PATIENCE_S + max(20.0, slots / 25) + 60
        command = [
            sys.executable, str(REPO / "benchmarks" / "load_app.py"), "--rpc-url", anvil.rpc_url,
            "--deployment", str(Path(tmp) / "deployment.json"), "--relay-url", relay_url,
            "--in-flight", str(slots // 3), "--seconds", str(budget_s),
        ]  # fmt: skip
        loads: list[subprocess.Popen[str]] = []

        def start_load() -> None:
            loads.append(
                subprocess.Popen(command, cwd=REPO, env=CHILD_ENV, stdout=subprocess.DEVNULL, text=True)
            )

        try:
            return {"slots": slots} | asyncio.run(
                serve_and_restart(config, keys, seconds, setup, start_load, profile)
            )
        finally:
            for load in loads:
                load.kill()
                load.wait()


# -- stages -----------------------------------------------------------------------------------------------

STAGES = ["selected", "args_fetched", "executed", "committed", "commitments_ready", "disclosed", "validated"]


def split_round(created_at: float, marks: dict[str, float]) -> dict[str, float]:
    """A round's time, from its TaskStarted to its payment, by stage and by cause."""
    causes = {
        "inference": marks.get("engine_s", 0.0),
        "own transactions (sign, send, mined)": marks.get("chain_s", 0.0),
        "the other nodes' transactions": (marks["commitments_ready"] - marks["committed"])
        + (marks["validated"] - marks["disclosed"]),
        "the arguments (the relay learns of the task, the application uploads)": marks["args_fetched"]
        - marks["selected"],
    }
    total = marks["settled"] - marks["selected"]
    durations = {f"{a} -> {b}": marks[b] - marks[a] for a, b in itertools.pairwise(STAGES)}
    return (
        {"created -> selected": marks["selected"] - created_at}
        | durations
        | {"validated -> paid": marks["settled"] - marks["validated"], "round total": total}
        | {f"waiting for {cause}" if cause != "inference" else cause: s for cause, s in causes.items()}
        | {"the cluster's own overhead": total - sum(causes.values())}
    )


async def stage_scenario(tmp: Path, anvil: Anvil, deployment: Deployment, relay_url: str, tasks: int) -> Any:
    import ray

    from benchmarks.load_app import Application
    from cluster.config import EngineConfig, RigConfig, VirtualGpus
    from cluster.coordinator.scheduling.placement import rig_ray_resources
    from cluster.coordinator.scheduling.pool import WorkerPool
    from network.devnet.models import ensure_models, gpt_task

    models = ensure_models(tmp / "models")
    rig = RigConfig(
        name="bench", device="cpu", discover_gpus=False, places_per_gpu=1, model_cache_dir=str(tmp / "hub"),
        vram_budget_fraction=0.5, virtual_gpus=[VirtualGpus(card_name="Bench Card", vram_gb=8, count=3)],
    )  # fmt: skip
    engine = EngineConfig(text="transformers", image="diffusers", deterministic=True, runtime_tag=None)
    ray.init(address="local", num_cpus=2, resources=rig_ray_resources(rig, engine), include_dashboard=False,
             log_to_driver=False, namespace="bench")  # fmt: skip
    pool = await WorkerPool.create(rig, engine, namespace="bench")
    keys = OperatorKeys.from_mnemonic(Account.create_with_mnemonic()[1])
    anvil.web3().provider.make_request("anvil_setBalance", [keys.operator.address, hex(10**24)])
    cards = [card for card in pool.card_models() for _ in range(pool.num_gpus(card))]
    coordinator = Coordinator(settings(anvil, deployment, relay_url, tmp / "farm", cards), keys, pool)
    await coordinator.start()
    await coordinator.join_nodes()
    stop = asyncio.Event()
    loop = asyncio.create_task(coordinator.run(stop))
    app = Application(
        anvil.rpc_url, deployment, relay_url, 20, make_args=lambda i: gpt_task(models["gpt"], i)
    )
    await app.start()
    for i in range(tasks):  # one task at a time: a round's stages undisturbed by the next
        await app.create(i)
        task_id = max(app.created_at)
        while {r.outcome for r in coordinator.store.of_task(task_id)} != {Outcome.PAID}:
            await asyncio.sleep(0.05)
    stop.set()
    await loop
    timeline, created = coordinator.timeline.all(), dict(app.created_at)
    await coordinator.close()
    await app.close()
    await pool.shutdown()
    ray.shutdown()
    return timeline, created


def run_stages(tasks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, network(Path(tmp)) as (anvil, deployment, relay_url):
        timeline, created = asyncio.run(stage_scenario(Path(tmp), anvil, deployment, relay_url, tasks))
    rounds = [
        split_round(created[int(key.split(":")[0][5:])], marks)
        for key, marks in timeline.items()
        if "settled" in marks and int(key.split(":")[0][5:]) in created
    ]
    median = [[name, round(statistics.median(r[name] for r in rounds), 3)] for name in rounds[0]]
    return {"num_rounds": len(rounds), "median_s": median}  # a list: the stages keep their order


# -- scheduling -------------------------------------------------------------------------------------------


def run_scheduling(num_workers: int = 1000, num_jobs: int = 20_000) -> dict[str, Any]:
    from cluster.coordinator.scheduling.groups import CardGroup, WorkerState
    from cluster.coordinator.scheduling.placement import plan_slots

    group = CardGroup(BENCH_CARD)
    group.workers = [WorkerState(slot, handle=None) for slot in plan_slots([BENCH_CARD] * num_workers)]
    for i, worker in enumerate(group.workers):
        worker.loaded_models = frozenset({f"model-{i % 7}"})
        worker.num_running = i % 2  # half of the workers busy

    async def decide() -> float:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        started = time.perf_counter()
        for i in range(num_jobs):
            worker = await group.acquire(time.time() + 60, f"model-{i % 7}")
            assert worker is not None
            worker.num_running -= 1  # release without a reply object: the slot frees at once
            group.wake()
        return time.perf_counter() - started

    seconds = asyncio.run(decide())
    return {
        "workers": num_workers,
        "decisions": num_jobs,
        "us_per_decision": round(1e6 * seconds / num_jobs, 1),
    }
