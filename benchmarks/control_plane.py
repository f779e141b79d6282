"""The ``control-plane`` phase of benchmarks/cluster_overhead.py: the real coordinator, fake everything else.

    python benchmarks/cluster_overhead.py --phases control-plane --slots 300 1000 4000 --drivers 0

Real: the coordinator (``cluster.coordinator.coordinator.Coordinator``, its loop in this process: the
event reader, the chain watch, the rounds, the sender with its signing, journal and receipt watch, the
store, funds and ledger, the relay client), talking HTTP to the chain and the relay. Fakes: the chain and
the relay are ``benchmarks/fake_network.py``, one subprocess (a model of the Task contract that keeps every
node account busy with tasks it creates itself, so there is no application process); the GPU workers are
``benchmarks/farm_sim.SimulatedPool`` (answers at once, in the coordinator's process, as in the capacity
phase). The node accounts are Available on the fake from the start: no bring-up transactions.

With 0 round drivers the coordinator runs on this process's loop (today's default below 1,000 places;
``--profile`` profiles it). With N > 0 it runs in a Ray actor (tests/coordinator/driver_host.py's
``CoordinatorHost``, as the product's ``CoordinatorActor``: the drivers call it back for jobs and the card
guard) with its N ``RoundDriverActor``s beside it on the local Ray, the operator's mnemonic in their
environment; the coordinator's CPU is then its actor's process's.

Figures over ``seconds`` after a warm-up (at least ``warmup_s``, then until every place has ended a round,
on average: the start's burst of rounds would not be a steady state; at most 480 s): rounds paid per
second (TaskNodeSuccess events of the farm's accounts the fake emitted; the coordinator's own count of
paid rounds beside it), the coordinator's CPU ms per round, each round driver's (its process, read with
psutil), the fake's, RPC calls per round as the fake counted them (all the control plane's processes),
failed transactions (mined with status 0 by the fake, over the whole run, warm-up included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from eth_account import Account

import cluster
from benchmarks.farm_sim import BENCH_CARD, SimulatedPool
from cluster.chain.accounts import OperatorKeys
from cluster.chain.anvil import free_port
from cluster.chain.sender import SenderConfig
from cluster.config import ChainEndpoints
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings

REPO = Path(__file__).resolve().parents[1]
BLOCK_TIME_S = 1.0
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("ECC_BACKEND_CLASS", "HELIUM_BENCH_CODE")}
REAL_PARTS = (
    "real: the coordinator's loop and everything it runs in its process (event reader, chain watch, rounds, "
    "signing, journal, receipts, store, funds, ledger, relay client) and, with N > 0, its N round-driver "
    "Ray actors, all over HTTP; fakes: the chain and the "
    "relay (benchmarks/fake_network.py, one process: a model of the Task contract, blocks every "
    f"{BLOCK_TIME_S:g} s, relay signatures not checked), the application (tasks created by the fake chain "
    "for every idle account), the GPU workers (benchmarks/farm_sim.SimulatedPool, answers at once)"
)
Account.enable_unaudited_hdwallet_features()


@dataclasses.dataclass
class FakeNetworkProcess:
    url: str
    addresses: dict[str, str]
    process: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/stats", timeout=30).json()

    def cpu_s(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system


@contextmanager
def fake_network(
    addresses: list[str], tmp: Path, *, block_time_s: float = BLOCK_TIME_S, task_timeout_s: int = 900
) -> Iterator[FakeNetworkProcess]:
    """benchmarks/fake_network.py in its own process, its accounts the farm's ``addresses``."""
    accounts = tmp / "accounts.json"
    accounts.write_text(json.dumps(addresses))
    port = free_port()
    command = [
        sys.executable, "-m", "benchmarks.fake_network", "--port", str(port), "--accounts", str(accounts),
        "--block-time", str(block_time_s), "--task-timeout", str(task_timeout_s),
    ]  # fmt: skip
    with open(tmp / "fake_network.log", "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=CHILD_ENV, stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                stats = httpx.get(f"{url}/stats", timeout=5).json()
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (tmp / "fake_network.log").read_text()
                    raise RuntimeError(f"the fake network did not start: {output}") from None
                time.sleep(0.2)
        yield FakeNetworkProcess(url, stats["addresses"], process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def coordinator_settings(fake: FakeNetworkProcess, state_dir: Path, places: int, num_drivers: int) -> Any:
    endpoints = ChainEndpoints(rpc_url=fake.url, relay_url=fake.url, addresses=fake.addresses, start_block=0)
    extra: dict[str, Any] = {}
    if num_drivers > 0:
        if "round_drivers" not in {f.name for f in dataclasses.fields(CoordinatorSettings)}:
            raise NotImplementedError(
                "round drivers: CoordinatorSettings has no round_drivers yet (issue 27, item 2): "
                "measure --drivers 0 until it does"
            )
        extra["round_drivers"] = num_drivers
    elif "round_drivers" in {f.name for f in dataclasses.fields(CoordinatorSettings)}:
        extra["round_drivers"] = 0
    return CoordinatorSettings(
        endpoints=endpoints, state_dir=state_dir, cards=[BENCH_CARD] * places, sender=SenderConfig(), **extra
    )


MAX_WARMUP_S = 480.0


def _is_warm(fake: FakeNetworkProcess, places: int) -> bool:
    """Every place has ended its first round, on average: the fake has created a second task's worth for
    each (the first window after a start would measure the start's burst of rounds, not a steady state)."""
    return fake.stats()["tasks_created"] >= 2 * (places // 3)


async def _warm_up(fake: FakeNetworkProcess, places: int, min_s: float) -> tuple[float, bool]:
    started = time.monotonic()
    await asyncio.sleep(min_s)
    while not (warm := await asyncio.to_thread(_is_warm, fake, places)):
        if time.monotonic() - started > MAX_WARMUP_S:
            break
        await asyncio.sleep(2.0)
    return round(time.monotonic() - started, 1), warm


def _warm_up_sync(fake: FakeNetworkProcess, places: int, min_s: float) -> tuple[float, bool]:
    return asyncio.run(_warm_up(fake, places, min_s))


def _paid_in_store(coordinator: Coordinator) -> int | None:
    from benchmarks.overhead_phases import num_paid

    try:
        return num_paid(coordinator)
    except AttributeError:  # rounds kept by the drivers, not the coordinator
        return None


def _process_cpu_s(pids: list[int]) -> dict[int, float]:
    cpu = {}
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        cpu[pid] = times.user + times.system
    return cpu


def _figures(
    *, places: int, wall_s: float, cpu_s: float, stats: tuple[dict[str, Any], dict[str, Any]],
    fake_cpu_s: float, driver_cpu_s: list[float], paid_in_store: int | None,
) -> dict[str, Any]:  # fmt: skip
    """The window's figures from the fake's counters before and after it and the processes' CPU."""
    stats0, stats1 = stats
    rounds = stats1["rounds_paid"] - stats0["rounds_paid"]
    per_round = max(rounds, 1)
    calls = {m: stats1["rpc_calls"].get(m, 0) - stats0["rpc_calls"].get(m, 0) for m in stats1["rpc_calls"]}
    relay = {k: stats1["relay"].get(k, 0) - stats0["relay"].get(k, 0) for k in stats1["relay"]}
    return {
        "places": places, "drivers": len(driver_cpu_s), "seconds": round(wall_s, 1), "rounds": rounds,
        "rounds_per_s": round(rounds / wall_s, 1),
        "rounds_per_s_coordinator_count": None if paid_in_store is None else round(paid_in_store / wall_s, 1),
        "cpu_ms_per_round": round(1000 * cpu_s / per_round, 2),
        "coordinator_cpu_share": round(cpu_s / wall_s, 2),
        "driver_cpu_ms_per_round": [round(1000 * s / per_round, 2) for s in driver_cpu_s],
        "fake_network_cpu_ms_per_round": round(1000 * fake_cpu_s / per_round, 2),
        "rpc_calls_per_round": round(sum(v for m, v in calls.items() if ":" not in m) / per_round, 2),
        "rpc_calls_per_round_by_method": {
            m: round(n / per_round, 2) for m, n in sorted(calls.items(), key=lambda kv: -kv[1]) if n
        },
        "relay_requests_per_round": round(sum(relay.values()) / per_round, 2),
        "relay_requests_per_round_by_endpoint": {k: round(n / per_round, 2) for k, n in relay.items()},
        "failed_txs": stats1["txs_failed"], "failed_by_reason": stats1["failed_by_reason"],
        "txs_refused_at_broadcast": stats1["txs_refused"], "unknown_rpc": stats1["unknown"],
        "rounds_slashed": stats1["rounds_slashed"], "rounds_cancelled": stats1["rounds_cancelled"],
        "tasks_created": stats1["tasks_created"], "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "real": REAL_PARTS, "coordinator_code": str(Path(cluster.__file__).resolve().parent),
    }  # fmt: skip


def _profile_on(host: Any) -> None:
    """cProfile in the coordinator's actor, over its event loop's thread (``--profile cprofile``)."""
    import ray

    ray.get(host.profile_start.remote(), timeout=60)


def _profile_off(host: Any, path: Path) -> None:
    import ray

    ray.get(host.profile_stop.remote(str(path)), timeout=120)


def _measure_with_drivers(
    settings: Any,
    mnemonic: str,
    fake: FakeNetworkProcess,
    seconds: float,
    warmup_s: float,
    profile: str | None = None,
) -> dict[str, Any]:
    """The coordinator in a Ray actor (what round drivers call back: the job runner, the card guard), its
    ``settings.round_drivers`` drivers beside it; each process's CPU read with psutil."""
    import ray

    from tests.coordinator.driver_host import CoordinatorHost

    # the drivers read the operator's mnemonic from their environment, never from an argument
    env = {settings.mnemonic_env: mnemonic}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        host = CoordinatorHost.remote(settings, mnemonic, SimulatedPool)
        started = time.monotonic()
        driver_pids = list(ray.get(host.start.remote(), timeout=900))
        start_s = round(time.monotonic() - started, 1)
        host_pid = ray.get(host.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
        warmed_s, is_warm = _warm_up_sync(fake, len(settings.cards), warmup_s)
        profiler = None
        if profile is not None:
            from benchmarks.overhead_profile import WindowProfiler

            if profile != "cprofile":
                raise ValueError("with round drivers, --profile cprofile only (in the coordinator's actor)")
            profiler = WindowProfiler(profile, len(settings.cards), seconds)
            _profile_on(host)
        stats0, fake0, paid0 = fake.stats(), fake.cpu_s(), _paid_in_status(host)
        cpu0, drivers0, wall0 = _process_cpu_s([host_pid]), _process_cpu_s(driver_pids), time.monotonic()
        time.sleep(seconds)
        cpu1, drivers1, wall_s = (
            _process_cpu_s([host_pid]),
            _process_cpu_s(driver_pids),
            time.monotonic() - wall0,
        )
        stats1, fake1, paid1 = fake.stats(), fake.cpu_s(), _paid_in_status(host)
        if profiler is not None:
            _profile_off(host, profiler.path)
        restarted = sorted(ray.get(host.driver_pids.remote(), timeout=60)) != sorted(driver_pids)
    finally:
        ray.shutdown()  # the local Ray: the host and its (detached) drivers end with it
    figures = _figures(
        places=len(settings.cards),
        wall_s=wall_s,
        cpu_s=cpu1[host_pid] - cpu0[host_pid],
        stats=(stats0, stats1),
        fake_cpu_s=fake1 - fake0,
        driver_cpu_s=[drivers1[p] - drivers0[p] for p in driver_pids],
        paid_in_store=None if paid0 is None or paid1 is None else paid1 - paid0,
    ) | {"warmup_s": warmed_s, "warm": is_warm, "start_s": start_s, "unfinished_at_stop": None,
         "driver_restarted": restarted}  # fmt: skip
    if profiler is not None:
        figures["profile"] = profiler.result(max(figures["rounds"], 1), figures["cpu_ms_per_round"])
    return figures


def _paid_in_status(host: Any) -> int | None:
    """Rounds paid as the coordinator's status counts them (its drivers' summaries)."""
    import ray

    from cluster.coordinator.round_state import Outcome

    try:
        return int(ray.get(host.status.remote(), timeout=60).tasks.ended(Outcome.PAID))
    except Exception:  # a status of another shape: the chain's count stands alone
        return None


async def _measure(
    coordinator: Coordinator, fake: FakeNetworkProcess, seconds: float, warmup_s: float, profile: str | None
) -> dict[str, Any]:
    started = time.monotonic()
    await coordinator.start()
    await coordinator.join_nodes()  # every account Available on the fake: nothing is sent
    start_s = round(time.monotonic() - started, 1)
    # round drivers (issue 27, item 2): their processes, measured beside this one
    driver_pids = list(await coordinator.driver_pids()) if hasattr(coordinator, "driver_pids") else []
    stop = asyncio.Event()
    loop = asyncio.create_task(coordinator.run(stop))
    warmed_s, is_warm = await _warm_up(fake, len(coordinator.settings.cards), warmup_s)
    profiler = None
    if profile is not None:
        from benchmarks.overhead_profile import WindowProfiler

        profiler = WindowProfiler(profile, len(coordinator.settings.cards), seconds)
        profiler.start()
    stats0, fake0 = await asyncio.to_thread(fake.stats), fake.cpu_s()
    paid0, drivers0 = _paid_in_store(coordinator), _process_cpu_s(driver_pids)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    paid1, drivers1 = _paid_in_store(coordinator), _process_cpu_s(driver_pids)
    stats1, fake1 = await asyncio.to_thread(fake.stats), fake.cpu_s()
    if profiler is not None:
        profiler.stop()
    stop.set()
    await loop
    unfinished = len(coordinator.store.unfinished()) if hasattr(coordinator, "store") else None
    await coordinator.close()
    figures = _figures(
        places=len(coordinator.settings.cards),
        wall_s=wall_s,
        cpu_s=cpu_s,
        stats=(stats0, stats1),
        fake_cpu_s=fake1 - fake0,
        driver_cpu_s=[drivers1[p] - drivers0[p] for p in driver_pids],
        paid_in_store=None if paid0 is None or paid1 is None else paid1 - paid0,
    ) | {"warmup_s": warmed_s, "warm": is_warm, "start_s": start_s, "unfinished_at_stop": unfinished}
    rounds = figures["rounds"]
    per_round = max(rounds, 1)
    if profiler is not None:
        figures["profile"] = profiler.result(rounds, 1000 * cpu_s / per_round)
    return figures


def run_control_plane(
    places: int,
    seconds: float,
    num_drivers: int,
    *,
    warmup_s: float | None = None,
    block_time_s: float = BLOCK_TIME_S,
    profile: str | None = None,
) -> dict[str, Any]:
    """Rounds/s and the control plane's CPU per round with ``places`` node accounts, the real coordinator
    (and ``num_drivers`` round drivers) against the fake chain and relay; see the module doc."""
    mnemonic = Account.create_with_mnemonic()[1]
    keys = OperatorKeys.from_mnemonic(mnemonic)
    addresses = [keys.node(i).address for i in range(places)]  # derived once: the coordinator reuses them
    warmup = warmup_s if warmup_s is not None else 20.0  # at least; then until every place ended a round
    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_network(addresses, Path(tmp), block_time_s=block_time_s) as fake,
    ):
        settings = coordinator_settings(fake, Path(tmp) / "farm", places, num_drivers)
        if num_drivers > 0:
            return _measure_with_drivers(settings, mnemonic, fake, seconds, warmup, profile)
        coordinator = Coordinator(settings, keys, SimulatedPool())
        return asyncio.run(_measure(coordinator, fake, seconds, warmup, profile))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="the control plane against the fake chain and relay")
    parser.add_argument("--places", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drivers", type=int, default=0)
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--profile", choices=["sampling", "cprofile"], default=None)
    options = parser.parse_args(argv)
    figures = run_control_plane(
        options.places, options.seconds, options.drivers, warmup_s=options.warmup, profile=options.profile
    )
    print(json.dumps(figures, indent=1))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
