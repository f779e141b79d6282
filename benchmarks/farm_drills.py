"""The farm's machines lost, added and drained while tasks stream, and the accounts at the target size
(issue 26, item 6).

    python benchmarks/farm_drills.py                     # every part: benchmarks/results/farm_drills.*
    python benchmarks/farm_drills.py --parts target --machines 25    # 200 accounts only (quick)
    python benchmarks/farm_drills.py --render            # the markdown again from the JSON

Parts (figures go to benchmarks/results/farm_drills.json, and from there to farm_drills.md):
- ``farm``: a Ray head and four simulated machines on this host (tests/farm/simulated.py: one real raylet
  each, their GPUs virtual card resources; three machines of two GPUs of card A, one of three of card B:
  nine GPU worker processes running the tiny model on the CPU), the coordinator's service in this process,
  its own anvil (a block a second) with the contracts, the relay in its own process, and an application
  keeping three GPT tasks in flight. In turn: a machine of card A killed while one of its jobs runs (lost),
  a machine of three GPUs of card A added (its two spare accounts resumed, one new account derived),
  a machine of card A drained with a job running on it, then taken back.
- ``target``: 125 machines of 8 places (1,000 node accounts) behind the real ``WorkerPool``, whose Ray
  calls are replaced (``alive_nodes``: the machines as Ray would list them; the workers answer at once),
  with the real chain and contracts: the accounts brought up, one machine lost and the service's
  ``follow_machines_once`` pausing its 8 accounts, the machine back and its accounts resumed; the CPU time
  of ``plan_capacity`` and of one look at the machines when nothing changed.
- ``head``: the head killed and restarted on the same Redis (GCS fault tolerance): runs
  tests/farm/test_head_restart.py (its own Redis, ``ray start`` head and machine, the coordinator as a
  detached actor; see its docstring) and records the seconds it prints; every task paid and none slashed
  are its assertions.
``--render`` writes the markdown from the JSON, with the JSON's ``notes`` (written by hand) under the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eth_account import Account  # noqa: E402
from web3 import HTTPProvider, Web3  # noqa: E402

from benchmarks.overhead_phases import network, rpc_calls  # noqa: E402
from cluster.chain.accounts import OperatorKeys  # noqa: E402
from cluster.chain.contracts import NodeStatus  # noqa: E402
from cluster.coordinator.round_state import Outcome  # noqa: E402
from tests.coordinator.factories import APP, FUNDER, endpoints, gpt_args  # noqa: E402
from tests.farm.simulated import CARD_A, SimulatedFarm, farm_config  # noqa: E402

RESULTS_JSON = REPO / "benchmarks" / "results" / "farm_drills.json"
RESULTS_MD = REPO / "benchmarks" / "results" / "farm_drills.md"
LONG_JOB = {"max_new_tokens": 160}  # a second or more on a CPU worker: long enough to be caught running
IN_FLIGHT = 3  # tasks the application keeps going: nine rounds, every place of the farm busy
TASK_TIMEOUT_S = 240.0
PAUSED = (NodeStatus.PAUSED, NodeStatus.PENDING_PAUSE)
SERVING = (NodeStatus.AVAILABLE, NodeStatus.BUSY)
log = logging.getLogger("farm_drills")
Account.enable_unaudited_hdwallet_features()


def since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(every_s)


# -- what the drills read ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRecord:
    ended: float  # time.monotonic()
    task_id: int | None
    round: int | None
    worker_id: str
    attempts: int  # the pool's tries: 2 or more when a worker was lost (or a transient error retried)
    ok: bool


class JobLog:
    """Every job the coordinator's rounds run through the pool: when it ended, on which worker, after how
    many tries (``pool.run_job`` wrapped; the pool's own retry on a sibling shows in ``reply.attempts``)."""

    def __init__(self, pool: Any):
        self.records: list[JobRecord] = []
        run_job = pool.run_job

        async def recorded(card: Any, request: Any) -> Any:
            try:
                reply = await run_job(card, request)
            except Exception:
                self.records.append(JobRecord(time.monotonic(), request.task_id, request.round, "", 0, False))
                raise
            self.records.append(JobRecord(time.monotonic(), request.task_id, request.round, reply.worker_id,
                                          reply.attempts, reply.ok))  # fmt: skip
            return reply

        pool.run_job = recorded

    def since(self, started: float) -> list[JobRecord]:
        return [r for r in list(self.records) if r.ended >= started]


class TaskStream:
    """An application in a thread of its own keeping ``in_flight`` GPT tasks going, each paid for and
    waited on until its verified result; ``stop`` lets the running ones end."""

    def __init__(self, rpc_url: str, deployment: Any, relay_url: str, model: Path, state_dir: Path, name: str,
                 in_flight: int = IN_FLIGHT):  # fmt: skip
        self.args = (rpc_url, deployment, relay_url, APP, state_dir)
        self.model, self.name, self.in_flight = model, name, in_flight
        self.done: list[dict[str, Any]] = []
        self.first_seed = secrets.randbelow(2**30)  # prompts of their own: no two tasks alike
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name=name)

    def start(self) -> TaskStream:
        self._thread.start()
        return self

    async def _main(self) -> None:
        from cluster.protocol.task import TaskType
        from network.app.client import ApplicationClient

        async with ApplicationClient(*self.args) as app:

            async def one(seed: int) -> None:
                started, record = time.monotonic(), {"seed": seed}
                try:
                    args = gpt_args(self.model, seed, **LONG_JOB)
                    task_id, files = await app.run(TaskType.GPT, args, request_id=f"{self.name}-{seed}",
                                                   timeout_s=TASK_TIMEOUT_S)  # fmt: skip
                    record |= {"task_id": task_id, "ok": bool(files)}
                except Exception as exc:  # the task did not complete: lost
                    record |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
                record["seconds"] = since(started)
                self.done.append(record)

            running: set[asyncio.Task[None]] = set()
            seed = 0
            while not self._stop.is_set():
                while len(running) < self.in_flight:
                    seed += 1
                    running.add(asyncio.create_task(one(self.first_seed + seed)))
                _, running = await asyncio.wait(running, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            if running:
                await asyncio.wait(running)

    def stop(self, timeout_s: float = TASK_TIMEOUT_S + 30) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout_s)
        lost = [r for r in self.done if not r["ok"]]
        return {"tasks": len(self.done), "completed": len(self.done) - len(lost), "lost": len(lost),
                "lost_errors": [r.get("error", "no result files") for r in lost],
                "unfinished_at_stop": self._thread.is_alive()}  # fmt: skip


class ChainView:
    """Node statuses read straight from the Node contract (web3 in this thread: the farm's loop is left
    alone)."""

    def __init__(self, rpc_url: str, deployment: Any):
        w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.node = deployment.bind(w3).contract("Node")

    def statuses(self, addresses: list[str]) -> list[NodeStatus]:
        return [NodeStatus(self.node.functions.nodeStatus(a).call()) for a in addresses]

    def all_in(self, addresses: list[str], states: tuple[NodeStatus, ...]) -> bool:
        return all(s in states for s in self.statuses(addresses))


# -- the farm's drills ------------------------------------------------------------------------------------


class FarmDrills:
    def __init__(self, farm: SimulatedFarm, chain: ChainView, stream: Callable[[str], TaskStream]):
        self.farm, self.chain, self.stream = farm, chain, stream
        self.service = farm.service
        self.pool, self.coordinator = farm.service.pool, farm.service.coordinator
        self.jobs = JobLog(self.pool)
        self.card_a = farm.card("a")

    def view(self, node_id: str) -> Any:
        return next((v for v in self.pool.machines() if v.node_id == node_id), None)

    def slashed(self) -> int:
        return self.coordinator.store.counts().ended(Outcome.SLASHED)

    def paid(self) -> int:
        return self.coordinator.store.counts().ended(Outcome.PAID)

    def accounts_a(self) -> list[str]:
        return [n.address for n in self.coordinator.nodes.of_card(self.card_a)]

    def a_serving(self, places: int) -> bool:
        """Card A has ``places`` accounts, none of them spare, each available or busy on chain."""
        accounts = self.accounts_a()
        if len(accounts) != places or set(accounts) & self.coordinator.spare_accounts:
            return False
        return self.chain.all_in(accounts, SERVING)

    def a_machine(self, *, gpus: int, running: bool = False) -> str:
        """A serving machine of ``gpus`` GPUs of card A (the one with most jobs running when asked)."""
        views = [v for v in self.pool.machines()
                 if v.state == "serving" and v.gpus.get(self.card_a.short_id) == gpus]  # fmt: skip
        return max(views, key=lambda v: v.num_running if running else 0).node_id

    def busy_a_machine(self) -> str:
        """Once a job runs on a serving machine of two GPUs of card A: the one with most jobs running."""
        wait_for(lambda: any(v.num_running for v in self.pool.machines()
                             if v.state == "serving" and v.gpus.get(self.card_a.short_id) == 2), 180,
                 "a job on a machine of card A")  # fmt: skip
        return self.a_machine(gpus=2, running=True)

    def rerun(self, started: float) -> dict[str, Any]:
        again = [r for r in self.jobs.since(started) if r.attempts > 1]
        return {"rounds_run_again": len(again), "tasks_run_again": len({r.task_id for r in again}),
                "attempts": [r.attempts for r in again]}  # fmt: skip

    def machine_lost(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        slashed0, paid0 = self.slashed(), self.paid()
        stream = self.stream("lost").start()
        try:
            victim = self.busy_a_machine()
            figures["machine"] = victim[:8]
            figures["jobs_running_there"] = self.view(victim).num_running
            spare0 = self.coordinator.spare_accounts
            started = time.monotonic()
            self.farm.kill_machine(victim)
            figures["kill_s"] = since(started)
            wait_for(lambda: self.view(victim).state == "lost", 60, "the loss noticed")
            figures["noticed_s"] = since(started)
            wait_for(lambda: len(self.coordinator.spare_accounts - spare0) == 2, 60, "two accounts spare")
            figures["accounts_spare_s"] = since(started)
            paused = sorted(self.coordinator.spare_accounts - spare0)
            wait_for(lambda: self.chain.all_in(paused, PAUSED), 60, "paused or pending")
            figures["paused_or_pending_on_chain_s"] = since(started)
            figures["statuses_then"] = [s.name for s in self.chain.statuses(paused)]
            wait_for(lambda: self.chain.all_in(paused, (NodeStatus.PAUSED,)), 120, "paused")
            figures["paused_on_chain_s"] = since(started)
            time.sleep(5)  # tasks go on on the four places left
        finally:
            figures["stream"] = stream.stop()
        figures |= self.rerun(started)
        figures["rounds_paid"] = self.paid() - paid0
        figures["slashed"] = self.slashed() - slashed0
        return figures

    def machine_added(self) -> dict[str, Any]:
        accounts_before = len(self.accounts_a())
        places = accounts_before - len(set(self.accounts_a()) & self.coordinator.spare_accounts) + 3
        figures: dict[str, Any] = {}
        slashed0, paid0 = self.slashed(), self.paid()
        stream = self.stream("added").start()
        try:
            time.sleep(3)  # the stream under way
            started = time.monotonic()
            node_id = self.farm.add_machine(a=3)
            figures["machine"] = node_id[:8]
            figures["raylet_started_s"] = since(started)
            wait_for(lambda: self.view(node_id) is not None, 60, "the pool sees the machine")
            figures["pool_sees_it_s"] = since(started)
            wait_for(lambda: self.view(node_id).num_alive_workers == 3, 240, "its workers answer")
            figures["workers_serving_s"] = since(started)
            wait_for(lambda: self.a_serving(places), 120, "card A's accounts serving", every_s=0.1)
            figures["accounts_serving_s"] = since(started)
            figures["accounts_derived"] = len(self.accounts_a()) - accounts_before
            prefix = node_id[:8]

            def first_on_it(ok_paid: bool) -> JobRecord | None:
                for r in self.jobs.since(started):
                    if prefix in r.worker_id and r.ok and r.task_id is not None:
                        if not ok_paid:
                            return r
                        row = self.coordinator.store.get(r.task_id, r.round)
                        if row is not None and row.outcome is Outcome.PAID:
                            return r
                return None

            wait_for(lambda: first_on_it(False) is not None, 240, "a job on the new machine", every_s=0.1)
            figures["first_job_done_s"] = round(first_on_it(False).ended - started, 2)
            wait_for(lambda: first_on_it(True) is not None, 240, "a round on it paid", every_s=0.1)
            figures["first_paid_round_s"] = since(started)
        finally:
            figures["stream"] = stream.stop()
        figures["rounds_paid"] = self.paid() - paid0
        figures["slashed"] = self.slashed() - slashed0
        return figures

    def machine_drained(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        slashed0, paid0 = self.slashed(), self.paid()
        places = len(self.accounts_a()) - len(set(self.accounts_a()) & self.coordinator.spare_accounts)
        stream = self.stream("drained").start()
        try:
            time.sleep(3)
            target = self.busy_a_machine()
            figures["machine"] = target[:8]
            figures["jobs_running_there"] = self.view(target).num_running
            spare0 = self.coordinator.spare_accounts
            started = time.monotonic()
            drain = self.farm.submit(self.service.drain(target, timeout_s=300))
            wait_for(lambda: len(self.coordinator.spare_accounts - spare0) == 2 or drain.done(), 60, "spare")
            paused = sorted(self.coordinator.spare_accounts - spare0)
            wait_for(lambda: self.chain.all_in(paused, PAUSED), 60, "paused or pending on chain")
            figures["paused_or_pending_on_chain_s"] = since(started)
            view = drain.result(timeout=320)
            figures["drained_s"] = since(started)  # its jobs ended and its workers stopped: safe to remove
            figures["state"], figures["safe_to_remove"] = view.state, view.is_safe_to_remove
            time.sleep(3)
        finally:
            figures["stream"] = stream.stop()
        figures |= self.rerun(started)
        figures["rounds_paid"] = self.paid() - paid0
        figures["slashed"] = self.slashed() - slashed0
        started = time.monotonic()
        self.farm.run(self.service.undrain(target))
        figures["undrain_workers_serving_s"] = since(started)
        wait_for(lambda: self.a_serving(places), 120, "its accounts resumed", every_s=0.1)
        figures["undrain_accounts_serving_s"] = since(started)
        return figures


def run_farm(tmp: Path) -> dict[str, Any]:
    from cluster.workers.models.builders import build_tiny_causal_lm

    started = time.monotonic()
    with network(tmp) as (anvil, deployment, relay_url):
        model = build_tiny_causal_lm(tmp / "models" / "tiny-lm")
        w3 = anvil.web3()
        operator, mnemonic = Account.create_with_mnemonic()
        funds = {"from": FUNDER.address, "to": operator.address, "value": 10_000 * 10**18}
        w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction(funds))
        config = farm_config(tmp / "state", tmp / "hub")
        farm = SimulatedFarm(config, endpoints(anvil.rpc_url, deployment, relay_url), mnemonic)
        farm.start_ray()
        try:
            for _ in range(3):
                farm.add_machine(a=2)
            farm.add_machine(b=3)
            farm.start_service()
            figures: dict[str, Any] = {"set_up_s": since(started)}
            log.warning("farm up in %.0f s", figures["set_up_s"])
            chain = ChainView(anvil.rpc_url, deployment)
            count = iter(range(100))

            def stream(name: str) -> TaskStream:
                state = tmp / f"app-{name}-{next(count)}"
                return TaskStream(anvil.rpc_url, deployment, relay_url, model, state, name)

            drills = FarmDrills(farm, chain, stream)
            for name, drill in (("lost", drills.machine_lost), ("added", drills.machine_added),
                                ("drained", drills.machine_drained)):  # fmt: skip
                figures[name] = drill()
                log.warning("%s: %s", name, json.dumps(figures[name]))
            figures["slashed_total"] = drills.slashed()
            figures["paid_total"] = drills.paid()
        finally:
            farm.close()
    figures["seconds"] = since(started)
    return figures


# -- the target size --------------------------------------------------------------------------------------


class _Answers:
    def remote(self, *args: Any, **kwargs: Any) -> None:
        return None


class InstantWorker:
    """A worker handle whose calls answer at once (the pool's Ray calls replaced: ``ray_future``)."""

    loaded_models = _Answers()


def fake_node(number: int, resource: str, gpus: int) -> dict[str, Any]:
    node_id = f"{number:08x}{secrets.token_hex(24)}"
    address = f"10.0.{number // 250}.{number % 250 + 1}"
    return {"NodeID": node_id, "NodeManagerAddress": address, "Resources": {resource: gpus}, "Alive": True}


async def target_scenario(tmp: Path, anvil: Any, deployment: Any, relay_url: str, mnemonic: str,
                          num_machines: int, per_machine: int) -> dict[str, Any]:  # fmt: skip
    import cluster.coordinator.scheduling.pool as pool_module
    from cluster.coordinator.actor import CoordinatorService
    from cluster.coordinator.capacity import plan_capacity
    from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings
    from cluster.coordinator.scheduling.placement import virtual_cards
    from cluster.coordinator.scheduling.pool import WorkerPool

    config = farm_config(tmp / "state", tmp / "hub")
    chain = endpoints(anvil.rpc_url, deployment, relay_url)
    card = next(c for c in virtual_cards(config.rig, config.engine) if c.gpu_name == CARD_A)
    alive = {}
    for number in range(num_machines):
        node = fake_node(number, card.resource_name, per_machine)
        alive[node["NodeID"]] = node
    saved = pool_module.alive_nodes, pool_module.ray_future

    def answered(_: Any) -> asyncio.Future[frozenset[str]]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(frozenset())
        return future

    pool_module.alive_nodes, pool_module.ray_future = (lambda: dict(alive)), answered
    pool = WorkerPool(config.rig, config.engine, "farm-drills")
    pool._spawn = lambda placement: InstantWorker()  # type: ignore[method-assign]
    figures: dict[str, Any] = {"machines": num_machines, "places_per_machine": per_machine}
    try:
        for node in alive.values():
            for worker in pool._start_workers(await pool._add_machine(node)):
                worker.serves(())
        places = pool.places()
        figures["accounts"] = places[card]
        settings = CoordinatorSettings(
            endpoints=chain, state_dir=tmp / "coordinator", cards=[card] * places[card]
        )
        coordinator = Coordinator(settings, OperatorKeys.from_mnemonic(mnemonic), pool)
        await coordinator.start()
        try:
            started = time.monotonic()
            statuses = await coordinator.join_nodes()
            figures["bring_up_s"] = since(started)
            assert set(statuses.values()) == {NodeStatus.AVAILABLE}, set(statuses.values())
            service = CoordinatorService(config, chain)
            service.pool, service.coordinator = pool, coordinator
            service._places = await service._checked_places()

            async def one_look(what: str) -> None:
                calls, cpu, started = rpc_calls(coordinator), time.process_time(), time.monotonic()
                await service.follow_machines_once()
                figures[f"{what}_s"] = since(started)
                figures[f"{what}_cpu_ms"] = round(1000 * (time.process_time() - cpu), 1)
                figures[f"{what}_rpc_calls"] = sum((rpc_calls(coordinator) - calls).values())

            victim = next(iter(alive))
            del alive[victim]  # Ray found it dead
            await one_look("lost")
            spare = sorted(coordinator.spare_accounts)
            lost_statuses = [await coordinator.ops.node_status(a) for a in spare]
            figures["paused_accounts"] = len(spare)
            figures["paused_statuses"] = sorted({s.name for s in lost_statuses})
            node = fake_node(num_machines, card.resource_name, per_machine)
            alive[node["NodeID"]] = node  # a machine back: a new Ray node
            await one_look("back_joined")  # the machine and its workers found; they answer in the background
            await asyncio.sleep(0.05)
            await one_look("back")  # its places count: the spare accounts resumed
            figures["back_spare_left"] = len(coordinator.spare_accounts)
            figures["back_statuses"] = sorted({(await coordinator.ops.node_status(a)).name for a in spare})
            # the cost of one look when nothing changed (every machines_poll_s), and of its parts
            repeats = 50
            cpu = time.process_time()
            for _ in range(repeats):
                await service.follow_machines_once()
            figures["idle_look_cpu_ms"] = round(1000 * (time.process_time() - cpu) / repeats, 2)
            for name, call in (("places", pool.places), ("machines", pool.machines)):
                cpu = time.process_time()
                for _ in range(repeats):
                    call()
                figures[f"pool_{name}_cpu_ms"] = round(1000 * (time.process_time() - cpu) / repeats, 2)
            rows = coordinator.store.node_accounts.rows()
            busy = {row.index for row in rows[::2]}  # half of the accounts in a round
            lost_places = {card: places[card] - per_machine}
            cpu = time.process_time()
            for _ in range(repeats):
                plan = plan_capacity(rows, lost_places, busy=busy)
            figures["plan_capacity_cpu_ms"] = round(1000 * (time.process_time() - cpu) / repeats, 2)
            figures["plan_capacity_spares"] = len(plan.spare)
        finally:
            await coordinator.close()
    finally:
        pool_module.alive_nodes, pool_module.ray_future = saved
    return figures


def run_target(tmp: Path, num_machines: int, per_machine: int) -> dict[str, Any]:
    started = time.monotonic()
    with network(tmp) as (anvil, deployment, relay_url):
        w3 = anvil.web3()
        _, mnemonic = Account.create_with_mnemonic()
        operator = OperatorKeys.from_mnemonic(mnemonic).operator
        need_eth = num_machines * per_machine * 401 + 1_000  # a stake of 400 and gas for each account
        for funder in w3.eth.accounts[1 : 1 + need_eth // 900_000 + 1]:  # 1,000,000 each on anvil
            value = min(need_eth, 900_000) * 10**18
            w3.eth.wait_for_transaction_receipt(
                w3.eth.send_transaction({"from": funder, "to": operator.address, "value": value})
            )
            need_eth -= min(need_eth, 900_000)
        figures = asyncio.run(
            target_scenario(tmp, anvil, deployment, relay_url, mnemonic, num_machines, per_machine)
        )
    figures["seconds"] = since(started)
    return figures


# -- the head restarted -----------------------------------------------------------------------------------

HEAD_TEST = "tests/farm/test_head_restart.py"
HEAD_LINE = "[head restart] seconds after the kill: "


def run_head() -> dict[str, Any]:
    """tests/farm/test_head_restart.py, run as it is; the seconds it prints after the kill."""
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", HEAD_TEST, "-q", "-s", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    figures: dict[str, Any] = {"passed": done.returncode == 0, "seconds": since(started)}
    for line in done.stdout.splitlines():
        if line.startswith(HEAD_LINE):
            figures |= json.loads(line[len(HEAD_LINE) :])
    if not figures["passed"]:
        figures["output_tail"] = (done.stdout + done.stderr)[-3000:]
    return figures


# -- results ----------------------------------------------------------------------------------------------


def run_info(command: str) -> dict[str, Any]:
    load_1m, _, _ = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    return {"cpu": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_at_start": round(load_1m, 2), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": commit, "command": command}  # fmt: skip


FARM_SETUP = (
    "**Real:** the Ray head and one raylet per simulated machine (ray.cluster_utils.Cluster, on this "
    "host), the GPU worker processes (one per virtual GPU, running the tiny model on the CPU), the "
    "coordinator's service with its worker pool (in this process, on a loop of its own), anvil with a "
    "block a second, the deployed contracts, the relay (its own process) and an application paying for "
    "GPT tasks of 160 tokens, three in flight (nine rounds: every place busy). **Simulated:** the GPUs "
    "(card resources each raylet declares: three machines of two GPUs of card A, one of three of card "
    "B) and the failure (the raylet and every process on it killed at once, as a power cut). Ray's "
    "health checks are fast here (a dead raylet is found in about 2 s, tests/farm/simulated.py; Ray's "
    "default is about 15-30 s), and the coordinator looks at Ray's nodes every 0.5 s (`machines_poll_s`, "
    "2 s by default). Seconds from the kill, the `add_node` call or the drain call."
)
TARGET_SETUP = (
    "**Real:** anvil (a block a second, 200M gas), the contracts, the coordinator (its chain client, "
    "sender, store and capacity code) and the service's `follow_machines_once` over a real "
    "`WorkerPool`. **Simulated:** Ray under the pool (`alive_nodes` lists fake machines of one card "
    "model; a worker is a handle whose calls answer at once): no raylet, no health check (a lost "
    "machine is missing from the next look), no worker starting; no task streams. Figures: seconds of "
    "the call, the process's CPU, and the JSON-RPC calls the coordinator sent (sender and chain reader)."
)
HEAD_SETUP = (
    "**d) The head restarted** (the `head` part: tests/farm/test_head_restart.py, its own processes "
    "started and stopped by PID): a Redis, the Ray head (`ray start --head --block` with "
    "`RAY_REDIS_ADDRESS`: GCS fault tolerance, as KubeRay runs it) and one machine of three virtual GPUs of "
    "card A (`ray start`, its raylet waiting for its GCS as KubeRay's worker pods do); the coordinator is "
    "the detached actor `python -m cluster` starts, on the head; the session's anvil (a block a "
    "transaction), the relay in the test's process. The head is killed (SIGKILL) once a worker runs a "
    "task's job; a second task is paid for while it is down; then the head is started again on the same "
    "Redis and port. Seconds from the kill."
)


def _s(value: Any, unit: str = " s") -> str:
    return "-" if value is None else f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _run_line(info: dict[str, Any], seconds: float) -> str:
    end = f", {info['load_at_end']} at the end" if "load_at_end" in info else ""
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, load average "
        f"{info['load_at_start']} at the start{end}; {info['date']}, commit {info['commit']}. Reproduce: "
        f"`{info['command']}` ({seconds:.0f} s for this part)."
    )


def _farm_rows(f: dict[str, Any], head: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    lost, added, drained = f["lost"], f["added"], f["drained"]

    def tasks(drill: dict[str, Any]) -> str:
        return f"{drill['stream']['lost']} of {drill['stream']['tasks']}"

    rows = [
        (f"a) machine lost (2 GPUs of card A, {lost['jobs_running_there']} job(s) running there)",
         "the kill returned (its raylet and processes gone)", _s(lost["kill_s"])),
        ("", "the pool notices (machine LOST)", _s(lost["noticed_s"])),
        ("", "two accounts of card A made spare (the coordinator's decision)", _s(lost["accounts_spare_s"])),
        ("", f"both PAUSED or PENDING_PAUSE on chain (then: {', '.join(lost['statuses_then'])})",
         _s(lost["paused_or_pending_on_chain_s"])),
        ("", "both PAUSED on chain (a busy one's pause waits for its task)", _s(lost["paused_on_chain_s"])),
        ("", "rounds whose job ran again on a sibling (the pool's reply: attempts > 1)",
         f"{lost['rounds_run_again']} (of {lost['tasks_run_again']} task(s))"),
        ("", "tasks lost (did not complete) / streamed", tasks(lost)),
        ("", "rounds slashed", _s(lost["slashed"], "")),
        ("c) machine added (3 GPUs of card A: two spare accounts resumed, "
         f"{added['accounts_derived']} derived)", "its raylet started (`add_node` returned)",
         _s(added["raylet_started_s"])),
        ("", "the pool sees it", _s(added["pool_sees_it_s"])),
        ("", "its three workers answer (worker processes started, torch imported)",
         _s(added["workers_serving_s"])),
        ("", "its accounts serving on chain (card A: 7 available or busy, none spare)",
         _s(added["accounts_serving_s"])),
        ("", "the first job done on its workers (the model loaded cold)", _s(added["first_job_done_s"])),
        ("", "the first paid round whose job ran there", _s(added["first_paid_round_s"])),
        ("", "tasks lost / streamed", tasks(added)),
        ("", "rounds slashed", _s(added["slashed"], "")),
        (f"b) machine drained (2 GPUs of card A, {drained['jobs_running_there']} job(s) running there)",
         "two accounts PAUSED or PENDING_PAUSE on chain", _s(drained["paused_or_pending_on_chain_s"])),
        ("", "drained: its jobs ended, its workers stopped (safe to remove)", _s(drained["drained_s"])),
        ("", "rounds whose job ran again elsewhere", _s(drained["rounds_run_again"], "")),
        ("", "tasks lost / streamed", tasks(drained)),
        ("", "rounds slashed", _s(drained["slashed"], "")),
        ("", "taken back (undrain): its workers started again and serving",
         _s(drained["undrain_workers_serving_s"])),
        ("", "taken back: its accounts resumed on chain", _s(drained["undrain_accounts_serving_s"])),
    ]  # fmt: skip
    return rows + _head_rows(head)


def _head_rows(head: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    drill = "d) head killed and restarted (GCS fault tolerance on Redis; one machine of 3 GPUs of card A)"
    if head is None:
        return [(drill, "seconds to the first paid round after the restart; tasks lost",
                 "not run (`--parts head`)")]  # fmt: skip
    h = head["figures"]
    if not h["passed"] or "head_back_s" not in h:
        return [(drill, "tests/farm/test_head_restart.py", "**failed**: see the JSON's output_tail")]
    first_paid = h["in_flight_task_paid_s"]
    return [
        (drill, "the head's processes gone (SIGKILL)", _s(h["head_processes_gone_s"])),
        ("", "the head started again (once a second task was submitted, its fee paid)",
         _s(h["head_restarted_s"])),
        ("", "the head back (`ray start` answered)", _s(h["head_back_s"])),
        ("", "the coordinator answering (the actor restarted by Ray on the new head)",
         _s(h["coordinator_answering_s"])),
        ("", "the first paid round after the restart: the task in flight at the kill paid",
         f"{first_paid:g} s ({first_paid - h['head_back_s']:.1f} s after the head was back)"),
        ("", "the task paid for while the head was down, paid", _s(h["task_paid_for_while_down_paid_s"])),
        ("", "tasks lost / around the kill (the test's assertion: every round paid)", "0 of 2"),
        ("", "rounds slashed (the test's assertion)", "0"),
    ]  # fmt: skip


def _target_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    def look(name: str) -> str:
        return f"{t[name + '_s']:g} s, {t[name + '_cpu_ms']:g} ms CPU, {t[name + '_rpc_calls']} RPC calls"

    n = t["paused_accounts"]
    return [
        (f"bring-up of the {t['accounts']:,} accounts (funded, staked, joined: `join_nodes`)",
         _s(t["bring_up_s"])),
        (f"a machine lost: the look that pauses its {n} accounts on chain "
         f"({', '.join(t['paused_statuses'])} after)", look("lost")),
        ("the machine back (a new node): the look that finds it and starts its workers", look("back_joined")),
        (f"the next look: its places count, its {n} accounts resumed ({', '.join(t['back_statuses'])} after)",
         look("back")),
        ("one look when nothing changed (every `machines_poll_s`)", _s(t["idle_look_cpu_ms"], " ms CPU")),
        ("`pool.places()` (in each look) / `pool.machines()` (each status, farm status, metrics refresh)",
         f"{t['pool_places_cpu_ms']:g} / {t['pool_machines_cpu_ms']:g} ms CPU"),
        (f"`plan_capacity` over {t['accounts']:,} accounts, half of them busy, a machine lost",
         _s(t["plan_capacity_cpu_ms"], " ms CPU")),
    ]  # fmt: skip


def render(results: dict[str, Any]) -> str:
    farm, target, head = results.get("farm"), results.get("target"), results.get("head")
    out = [
        "# Farm drills: machines lost, added and drained; the accounts at the target size",
        "",
        "Recorded by `python benchmarks/farm_drills.py` (its docstring says what each part runs); issue 26,",
        "item 6. Figures also in farm_drills.json.",
        "",
    ]
    if farm:
        f = farm["figures"]
        out += ["## Drills on a farm of real raylets", "", _run_line(farm["run"], f["seconds"]),
                f"Setting the farm up took {f['set_up_s']:.0f} s of it.", "", FARM_SETUP, "",
                "| drill | measured | value |", "|---|---|---:|"]  # fmt: skip
        out += [f"| {a} | {b} | {c} |" for a, b, c in _farm_rows(f, head)]
        out += ["", f"Over drills a-c: {f['paid_total']} rounds paid, {f['slashed_total']} slashed."]
        if head:
            out += ["", HEAD_SETUP, _run_line(head["run"], head["figures"]["seconds"])]
        errors = [e for d in ("lost", "added", "drained") for e in f[d]["stream"]["lost_errors"]]
        if errors:
            out += ["", "The lost tasks' errors: " + "; ".join(f"`{e}`" for e in errors)]
        out += [""]
    if target:
        t = target["figures"]
        out += [f"## At the target size: {t['machines']} machines of {t['places_per_machine']} places "
                f"({t['accounts']:,} node accounts)", "", _run_line(target["run"], t["seconds"]), "",
                TARGET_SETUP, "", "| measured | value |", "|---|---:|"]  # fmt: skip
        out += [f"| {a} | {b} |" for a, b in _target_rows(t)]
        out += [""]
    if results.get("notes"):  # written by hand in the JSON: what the figures need said beside them
        out += ["## Notes", ""] + [f"- {note}" for note in results["notes"]] + [""]
    return "\n".join(out)


def write_report(results: dict[str, Any]) -> Path:
    RESULTS_MD.write_text(render(results))
    return RESULTS_MD


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = ["farm", "target", "head"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    parser.add_argument("--machines", type=int, default=125, help="machines at the target size")
    parser.add_argument("--places", type=int, default=8, help="places per machine at the target size")
    parser.add_argument("--render", action="store_true", help="only write the markdown from the JSON")
    parser.add_argument("--verbose", action="store_true", help="the cluster's INFO logs")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if options.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")  # fmt: skip
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    if not options.render:
        command = "python benchmarks/farm_drills.py " + " ".join(sys.argv[1:] if argv is None else argv)
        for part in options.parts:
            info = run_info(command.strip())
            with tempfile.TemporaryDirectory(prefix=f"farm-drills-{part}-") as tmp:
                if part == "farm":
                    figures = run_farm(Path(tmp))
                elif part == "target":
                    figures = run_target(Path(tmp), options.machines, options.places)
                else:
                    figures = run_head()
            info["load_at_end"] = round(os.getloadavg()[0], 2)
            results[part] = {"run": info, "figures": figures}
            print(f"{part}:", json.dumps(figures), flush=True)
            RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"wrote {write_report(results)}", flush=True)
    sys.stdout.flush()
    os._exit(0)  # Ray's and aiohttp's threads can hold a finished benchmark's exit: the results are written


if __name__ == "__main__":
    main()
