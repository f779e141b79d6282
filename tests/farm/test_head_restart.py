"""The Ray head killed while a task is in flight, and started again on the same Redis (GCS fault
tolerance, as KubeRay runs it): the detached coordinator actor is restarted by Ray on the new head and
resumes from its state directory, finds its GPU workers on the machine that kept running (the same
processes, their models still warm), finishes the open round and serves a task paid for while the head
was down. Nothing is slashed.

Every process is this test's own, started by PID and stopped by PID (tests/farm/ray_processes.py): a
Redis, the head (``ray start --head --block`` with ``RAY_REDIS_ADDRESS``), one machine of three virtual
GPUs of card A (the three places a GPT task needs) whose raylet waits for its GCS as KubeRay's worker pods
do, and short-lived drivers that start the coordinator as ``python -m cluster`` does and read it. The
seconds from the kill to the head back, to the coordinator answering and to the first task paid after
are printed (benchmarks/results/farm_drills.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from hydra import compose, initialize_config_dir

from cluster import envs
from cluster.chain.contracts import Events
from cluster.config import ClusterConfig, load_config
from cluster.coordinator.round_state import Outcome
from cluster.coordinator.scheduling.placement import virtual_cards
from cluster.protocol.task import TaskType
from cluster.status.model import CoordinatorStatus
from network.app.client import ApplicationClient
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.coordinator.factories import APP, FUNDER, endpoints, gpt_args
from tests.farm.ray_processes import (
    REPO,
    Driver,
    RayNode,
    Redis,
    cluster_env,
    cpu_seconds,
    free_port,
    head_args,
    run_driver,
    worker_node_args,
)
from tests.farm.simulated import CARD_A, HEALTH_CHECKS, MNEMONIC_ENV

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
COORDINATOR_RESOURCE = "helium-coordinator"  # only the head has it: the coordinator dies with the head
LONG_JOB = {"max_new_tokens": 160}  # a second or more on a CPU worker: long enough to be caught running
BUSY_SHARE = 0.3  # of a core, over a tenth of a second: a worker runs a job (an idle one uses ~1%)
PLACES = 3


def head_restart_config(root: Path) -> ClusterConfig:
    overrides = [
        "rig=cpu-devnet", f"rig.virtual_gpus=[{{card_name:'{CARD_A}',vram_gb:8,count:1}}]",
        f"state_dir={root / 'state'}", f"rig.model_cache_dir={root / 'hub'}", "metrics_port=0",
        "machines_poll_s=0.5",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = load_config(compose(config_name="config", overrides=overrides))
    return config.model_copy(update={"coordinator_resources": {COORDINATOR_RESOURCE: 1.0}})


def coordinator_logs(temp_dir: Path, tail: int = 4000) -> str:
    """The coordinator actor's log lines, from every session of the head (for a failure's message)."""
    found = []
    for path in sorted(temp_dir.glob("session_*/logs/worker-*")):
        text = path.read_text(errors="replace")
        if "[coordinator]" in text or "[pool]" in text:
            found.append(f"--- {path}\n{text[-tail:]}")
    return "\n".join(found)


def keep_logs(temp_dir: Path, to: Path, max_bytes: int = 2 * 1024**2) -> None:
    """Ray's logs of every node (both heads share their session: GCS fault tolerance keeps it), kept with
    the test's files once the processes stopped; the temporary folder goes."""
    for path in temp_dir.glob("**/session_*/logs/*"):
        if "session_latest" not in path.parts and path.is_file() and path.stat().st_size <= max_bytes:
            target = to / path.relative_to(temp_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def test_a_killed_head_comes_back_on_redis_and_the_farm_pays_with_the_same_warm_workers(
    anvil, deployment, w3, tmp_path
):
    from cluster.workers.models.builders import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "models" / "tiny-lm")
    operator, mnemonic = Account.create_with_mnemonic()
    w3.eth.send_transaction({"from": FUNDER.address, "to": operator.address, "value": 5_000 * 10**18})
    config = head_restart_config(tmp_path)
    card = virtual_cards(config.rig, config.engine)[0]
    temp_dir = Path(f"/tmp/hr-{secrets.token_hex(3)}")  # short: Ray's socket paths have a length limit
    env = cluster_env(**{MNEMONIC_ENV: mnemonic})
    relay_config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), port=0, poll_interval_s=0.05,
        data_dir=tmp_path / "relay", start_block=deployment.block_number,
    )  # fmt: skip
    heads: list[RayNode] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, temp_dir, ignore_errors=True)
        stack.callback(keep_logs, temp_dir, tmp_path / "ray-logs")
        relay = stack.enter_context(RunningRelay(relay_config))
        redis = Redis(temp_dir / "redis")
        stack.callback(redis.stop)
        head_env = cluster_env(  # the coordinator's process inherits it: its log at INFO, for a failure
            RAY_REDIS_ADDRESS=redis.address, RAY_external_storage_namespace=f"helium-{secrets.token_hex(4)}",
            **{envs.LOG_LEVEL.name: "INFO"},
        )  # fmt: skip
        port = free_port()
        address = f"127.0.0.1:{port}"
        left: dict[str, dict[int, str]] = {}
        stack.callback(lambda: left.update({f"head {h.pid}": h.stop() for h in heads}))

        def start_head() -> RayNode:
            # A killed head leaves Ray's address file naming it: `ray start --head` would take it as running.
            (temp_dir / "ray_current_cluster").unlink(missing_ok=True)
            args = head_args(port, temp_dir, {COORDINATOR_RESOURCE: 1}, HEALTH_CHECKS)
            heads.append(RayNode(args, head_env, tmp_path / f"head-{len(heads)}.log"))
            heads[-1].wait_started()
            return heads[-1]

        head = start_head()
        # Its raylet waits ten minutes for its GCS (Ray's default: 60 s), as KubeRay sets on worker pods.
        machine = RayNode(
            worker_node_args(address, temp_dir / "m1", {card.resource_name: PLACES}),
            cluster_env(RAY_gcs_rpc_server_reconnect_timeout_s="600"), tmp_path / "machine.log",
        )  # fmt: skip
        stack.callback(lambda: left.update({"machine": machine.stop()}))
        machine.wait_started()
        stack.callback(stop_the_farm, address, env, heads)  # runs first: the nodes paused, the workers ended
        try:
            (tmp_path / "config.json").write_text(config.model_dump_json())
            served = endpoints(anvil.rpc_url, deployment, relay.url)
            (tmp_path / "endpoints.json").write_text(served.model_dump_json())
            run_driver("start", address, str(tmp_path / "config.json"), str(tmp_path / "endpoints.json"),
                       env=env, timeout_s=400)  # fmt: skip

            app_dir = tmp_path / "app"
            first = asyncio.run(pay_for(anvil, deployment, relay, app_dir, model, seed=1))
            assert json.loads(first[0])["choices"][0]["message"]["role"] == "assistant"
            before = run_driver("workers", address, env=env)
            assert len(before) == PLACES, before
            assert any(str(model) in worker["models"] for worker in before.values()), before

            # A task in flight when the head dies (killed once a worker runs its job), and one paid for
            # while the head is down.
            successes = SuccessWatch(anvil.rpc_url, deployment, w3.eth.block_number)
            successes.start()
            stack.callback(successes.stop.set)
            app = AppThread(anvil, deployment, relay, app_dir, model)
            app.start()
            stack.callback(app.head_down.set)  # the application's thread does not wait for ever
            wait_for_a_job(list(before.values()), lambda: app.is_alive(), app.failure)
            killed_at = time.time()
            head.kill()
            down_at = time.time()
            block_at_kill = w3.eth.block_number
            # Asked at once: it connects once the head is back, and the coordinator answers once it serves.
            answering = Driver("status", address, env=env)
            stack.callback(lambda: answering.popen.poll() is None and answering.popen.kill())
            app.head_down.set()
            assert app.third_submitted.wait(timeout=120), app.failure()
            restarted_at = time.time()
            start_head()
            head_back_at = time.time()
            answered = answering.result(timeout_s=400)
            results = app.result(timeout_s=420)
            assert all(files for files in results), results
            final = run_driver("status", address, str(3 * PLACES), env=env, timeout_s=400)
            after = run_driver("workers", address, env=env)
        except BaseException:
            print(coordinator_logs(temp_dir))
            raise

        tasks = CoordinatorStatus.model_validate(final["status"]).tasks
        assert tasks.ended(Outcome.PAID) == 3 * PLACES, tasks  # every round of the three tasks paid
        assert tasks.ended(Outcome.SLASHED) == 0 and tasks.num_unfinished == 0, tasks
        # The same worker processes, on the machine that kept running, their warm models kept.
        assert {name: w["pid"] for name, w in after.items()} == {name: w["pid"] for name, w in before.items()}
        for name, worker in before.items():
            assert after[name]["node_id"] == worker["node_id"], (name, worker, after[name])
            assert set(worker["models"]) <= set(after[name]["models"]), (name, worker, after[name])
        in_flight = task_progress_at(w3, deployment, app.task_ids[0], block_at_kill)
        assert in_flight[Events.TASK_SUCCESS] == 0, in_flight  # the task was open when the head died
        drill = {
            "head_processes_gone_s": round(down_at - killed_at, 1),
            "head_restarted_s": round(restarted_at - killed_at, 1),
            "head_back_s": round(head_back_at - killed_at, 1),
            "coordinator_answering_s": round(answered["answered_at"] - killed_at, 1),
            "in_flight_task_paid_s": round(successes.seen_at[app.task_ids[0]] - killed_at, 1),
            "task_paid_for_while_down_paid_s": round(successes.seen_at[app.task_ids[1]] - killed_at, 1),
            "in_flight_task_at_kill": in_flight,
        }
        print(f"[head restart] seconds after the kill: {json.dumps(drill)}")
    assert all(not pids for pids in left.values()), f"processes left after their node stopped: {left}"


class AppThread(threading.Thread):
    """An application in a thread of its own: a task (the head is killed while it runs), and a second one
    paid for once the head is down."""

    def __init__(self, anvil, deployment, relay, state_dir: Path, model: Path):
        super().__init__(daemon=True, name="app")
        self.args = anvil, deployment, relay, state_dir, model
        self.head_down = threading.Event()
        self.third_submitted = threading.Event()
        self.task_ids: list[int] = []
        self.results: list[list[bytes]] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.results = asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.third_submitted.set()

    def failure(self) -> str:
        return f"the application failed: {self.error!r}" if self.error else "the application waited"

    def result(self, timeout_s: float) -> list[list[bytes]]:
        self.join(timeout_s)
        assert not self.is_alive(), "the tasks were not paid in time"
        if self.error is not None:
            raise self.error
        assert self.results is not None
        return self.results

    async def _main(self) -> list[list[bytes]]:
        anvil, deployment, relay, state_dir, model = self.args
        async with ApplicationClient(anvil.rpc_url, deployment, relay.url, APP, state_dir) as app:

            async def run(seed: int) -> list[bytes]:
                args = gpt_args(model, seed, **LONG_JOB)
                task_id = await app.submit(TaskType.GPT, args, request_id=f"head-restart-{seed}")
                self.task_ids.append(task_id)
                return await app.results(task_id, timeout_s=400)

            in_flight = asyncio.create_task(run(2))
            await asyncio.to_thread(self.head_down.wait, 300)
            assert self.head_down.is_set(), "the head was not killed"
            while len(self.task_ids) < 1:
                await asyncio.sleep(0.05)
            third = asyncio.create_task(run(3))
            while len(self.task_ids) < 2 and not third.done():
                await asyncio.sleep(0.05)
            self.third_submitted.set()
            return list(await asyncio.gather(in_flight, third))


def wait_for_a_job(workers: list[dict], is_waiting, failure, timeout_s: float = 300.0) -> None:
    """Until a worker process uses the CPU as a job does."""
    pids = [worker["pid"] for worker in workers]
    deadline = time.monotonic() + timeout_s
    last = {pid: cpu_seconds(pid) for pid in pids}
    while True:
        time.sleep(0.1)
        now = {pid: cpu_seconds(pid) for pid in pids}
        if any(now[pid] - last[pid] >= BUSY_SHARE * 0.1 for pid in pids):
            return
        assert is_waiting() and time.monotonic() < deadline, failure()
        last = now


class SuccessWatch(threading.Thread):
    """When each task's TaskSuccess (its nodes paid) was first seen on chain, looked for every 50 ms."""

    def __init__(self, rpc_url: str, deployment, from_block: int):
        from web3 import Web3

        super().__init__(daemon=True, name="successes")
        self.task = deployment.bind(Web3(Web3.HTTPProvider(rpc_url))).contract("Task")
        self.from_block = from_block
        self.seen_at: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        event = getattr(self.task.events, Events.TASK_SUCCESS)
        while not self.stop.wait(0.05):
            with contextlib.suppress(Exception):  # the chain busy: the next look
                for log in event().get_logs(from_block=self.from_block):
                    self.seen_at.setdefault(log["args"]["taskId"], time.time())


async def pay_for(anvil, deployment, relay, state_dir: Path, model: Path, seed: int) -> list[bytes]:
    async with ApplicationClient(anvil.rpc_url, deployment, relay.url, APP, state_dir) as app:
        args = gpt_args(model, seed, **LONG_JOB)
        _, files = await app.run(TaskType.GPT, args, request_id=f"head-restart-{seed}", timeout_s=400)
        return files


def task_progress_at(w3, deployment, task_id: int, block: int) -> dict[str, int]:
    """How far the task was on chain at ``block``: its commitments, disclosures and success."""
    task = deployment.bind(w3).contract("Task")
    names = [Events.TASK_RESULT_COMMITMENT_SUBMITTED, Events.TASK_RESULT_DISCLOSED, Events.TASK_SUCCESS]
    return {
        name: sum(
            log["args"]["taskId"] == task_id
            for log in getattr(task.events, name)().get_logs(
                from_block=deployment.block_number, to_block=block
            )
        )
        for name in names
    }


def stop_the_farm(address: str, env: dict[str, str], heads: list[RayNode]) -> None:
    """As an operator stops it (the nodes paused, so that no later test's task is given to them; the
    workers ended); best effort, with a head running: the processes are stopped by PID after it anyway."""
    if not heads or heads[-1].popen.poll() is not None:
        return
    try:
        run_driver("stop", address, env=env, timeout_s=300)
    except Exception as exc:
        print(f"[head restart] graceful stop failed: {exc}")
