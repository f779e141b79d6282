"""``ray job submit -- python -m cluster ...`` against a Ray head started with ``ray start --head``.

The farm's own deployment path, on the CPU rig: the head declares the virtual card models' resources,
the job connects through RAY_ADDRESS, its coordinator joins the nodes, serves a task that an application
pays for, and stops gracefully on ``ray job stop``. The head is this test's own (``ray start --head
--block``, its processes tracked by PID) and only it is stopped: ``ray stop`` stops every Ray on the
machine, another test's or a running devnet's included.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_account import Account
from hydra import compose, initialize_config_dir

from cluster.chain.anvil import DEV_MNEMONIC, free_port
from cluster.config import load_config
from cluster.coordinator.scheduling.placement import rig_ray_resources
from cluster.protocol.task import TaskType
from network.app.client import ApplicationClient
from network.devnet.models import ensure_models, gpt_task
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.processes import descendants, is_alive

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
Account.enable_unaudited_hdwallet_features()
APP = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/14")
FUNDER = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/15")
# The cpu-devnet rig's first card model alone: the three places a GPT task needs (six workers cost the
# suite a quarter of a minute more and show nothing more here)
ONE_CARD_MODEL = "rig.virtual_gpus=[{card_name:'Devnet Virtual Card A',vram_gb:8,count:3}]"


def ray_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on loopback with the cpu-devnet rig's card resources, as an operator would start it;
    in the foreground (``--block``), so that its processes are its own and stopped with it."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = load_config(compose(config_name="config", overrides=[ONE_CARD_MODEL]))
    resources = rig_ray_resources(config.rig, config.engine)
    temp_dir = Path(f"/tmp/rj-{secrets.token_hex(3)}")  # short: Ray's socket paths have a length limit
    dashboard_port = free_port()
    # Loopback only, in a test: no token. A farm keeps Ray's token authentication on (docs/deployment.md).
    env = {
        **os.environ,
        "RAY_ADDRESS": "",
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    # Another Ray on this machine, as `ray stop` sees one (it kills by command line: "log_monitor.py" in
    # its arguments): stopping this test's head must leave it running.
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)", "ray/log_monitor.py"]
    )
    log = tmp_path / "ray-head.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={free_port()}", f"--dashboard-port={dashboard_port}",
             "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2",
             f"--resources={json.dumps(resources)}", f"--temp-dir={temp_dir}"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        while "will now block forever" not in log.read_text():  # started: its processes are up
            assert head.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        yield f"http://127.0.0.1:{dashboard_port}", env
    finally:
        try:
            stop_own_ray(head)
            assert bystander.poll() is None, "stopping this test's Ray stopped another's"
        finally:
            bystander.kill()
            bystander.wait()
            shutil.rmtree(temp_dir, ignore_errors=True)


def stop_own_ray(head: subprocess.Popen) -> None:
    """SIGTERM to ``ray start --block``: it stops the processes it started (GCS, raylet, dashboard), and
    the workers (the job's driver and its actors) end with their raylet. Whatever of its own outlives it
    is killed by PID, and the test fails: it must not leave a process behind."""
    started = descendants(head.pid)
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=60)
    finally:
        deadline = time.monotonic() + 30
        while any(is_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: command for pid, command in started.items() if is_alive(pid)}
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert left == {}, f"Ray processes left after the head stopped: {left}"


def submit_when_the_agent_is_up(
    address: str, runtime_env: dict, entrypoint: list[str], env: dict[str, str], timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    """``ray job submit``, again while the head says its job agent is not up yet (a loaded machine starts
    it seconds after the head answers); any other answer is returned as it is."""
    deadline = time.monotonic() + timeout_s
    while True:
        submitted = ray_cli(
            "job", "submit", f"--address={address}", "--no-wait",
            f"--runtime-env-json={json.dumps(runtime_env)}", "--", *entrypoint, env=env,
        )  # fmt: skip
        if "No available agent" not in submitted.stderr or time.monotonic() > deadline:
            return submitted
        time.sleep(1.0)


def test_ray_job_submit_runs_the_cluster_and_serves_a_task(ray_head, w3, anvil, deployment, tmp_path):
    address, env = ray_head
    models = ensure_models(tmp_path / "models")
    deployment.save(tmp_path / "deployment.json")
    operator, mnemonic = Account.create_with_mnemonic()
    w3.eth.send_transaction({"from": FUNDER.address, "to": operator.address, "value": 5_000 * 10**18})
    relay_config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path / "relay", port=0,
        start_block=deployment.block_number, poll_interval_s=0.1,
    )  # fmt: skip
    with RunningRelay(relay_config) as relay:
        runtime_env = {"env_vars": {"HELIUM_OPERATOR_MNEMONIC": mnemonic, "HF_HUB_OFFLINE": "1"}}
        entrypoint = [
            sys.executable, "-m", "cluster", "rig=cpu-devnet", ONE_CARD_MODEL,
            f"network.chain.rpc_url={anvil.rpc_url}", f"network.relay_url={relay.url}",
            f"network.chain.deployment_file={tmp_path / 'deployment.json'}",
            f"state_dir={tmp_path / 'state'}", f"rig.model_cache_dir={tmp_path / 'hub'}", "metrics_port=0",
            f"engine.reference_model={models['gpt']}",
        ]  # fmt: skip
        submitted = submit_when_the_agent_is_up(address, runtime_env, entrypoint, env)
        assert submitted.returncode == 0, submitted.stderr[-2000:]
        job_id = re.search(r"raysubmit_[A-Za-z0-9]+", submitted.stdout + submitted.stderr).group(0)

        # A task no joined card model could run is refused (TaskCannotRun): pay once the job's nodes joined.
        node = deployment.bind(w3).contract("Node")
        joined_by = time.monotonic() + 300
        while not node.functions.canEverRun(int(TaskType.GPT), 0).call():
            assert time.monotonic() < joined_by, "the job's nodes did not join"
            time.sleep(0.5)

        async def pay_for_a_task() -> list[bytes]:
            async with ApplicationClient(anvil.rpc_url, deployment, relay.url, APP, tmp_path / "app") as app:
                _, files = await app.run(
                    TaskType.GPT, gpt_task(models["gpt"], 3), request_id="job", timeout_s=300
                )
                return files

        try:
            files = asyncio.run(pay_for_a_task())
            assert json.loads(files[0])["choices"][0]["message"]["role"] == "assistant"
        finally:
            ray_cli("job", "stop", f"--address={address}", job_id, env=env, timeout=180)
            shown = ray_cli("job", "logs", f"--address={address}", job_id, env=env)
            logs = shown.stdout + shown.stderr
        assert "workers agree on 2 reference task(s)" in logs, logs[-3000:]
        assert "stopping: pausing nodes" in logs, logs[-3000:]
