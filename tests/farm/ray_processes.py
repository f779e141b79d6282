"""A Ray cluster of real processes on this host, each started and stopped by this test by PID: a Redis for
GCS fault tolerance, a head (``ray start --head --block``) that can be killed as a power cut would and
started again, worker nodes declaring virtual GPUs; and short-lived drivers (``python -m
tests.farm.ray_processes ...``) that start the coordinator actor as the product does and read it.

The test process itself never joins the cluster: a driver dies with the head it is attached to, and a
test runner must not. Never ``ray stop``: it stops every Ray on the machine, another test's included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.processes import command_of, descendants, is_alive

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
STARTED_LINE = "will now block forever"  # `ray start --block` once its processes are up
RESULT_PREFIX = "RESULT "


def cluster_env(**extra: str) -> dict[str, str]:
    """Loopback only, in a test: no token (a farm keeps Ray's token authentication on)."""
    return {
        **os.environ,
        "RAY_ADDRESS": "",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OwnProcess:
    """A process this test started, and every process seen below it: stopped or killed by PID."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.argv, self.log = argv, log
        with log.open("w") as out:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.seen: dict[int, str] = {}  # pid -> command line, of every process found below it

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def track(self) -> dict[int, str]:
        found = descendants(self.pid)
        self.seen.update(found)
        return found

    def kill(self) -> None:
        """SIGKILL to the process and everything below it at once, as a power cut would."""
        below = self.track()
        for pid in [self.pid, *below]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self._wait_gone(below, timeout_s=30)

    def stop(self, timeout_s: float = 60.0) -> dict[int, str]:
        """SIGTERM (``ray start --block`` stops what it started), then SIGKILL whatever of its own is left;
        those left are returned."""
        self.track()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=30)
        self._wait_gone(self.seen, timeout_s=30)
        left = self._ours_alive(self.seen)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left

    @staticmethod
    def _ours_alive(processes: dict[int, str]) -> dict[int, str]:
        """Those still running under the same command line (a PID reused by another process is not ours)."""
        return {pid: cmd for pid, cmd in processes.items() if is_alive(pid) and command_of(pid) == cmd}

    def _wait_gone(self, processes: dict[int, str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._ours_alive(processes) and time.monotonic() < deadline:
            time.sleep(0.1)


class Redis(OwnProcess):
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        argv = [
            shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(directory), "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        super().__init__(argv, os.environ.copy(), directory / "redis.log")
        deadline = time.monotonic() + 30
        while not self._answers():
            assert self.popen.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


class RayNode(OwnProcess):
    """``ray start --block``: its processes (GCS, raylet, agents, the workers the raylet forks) are its
    descendants."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        super().__init__([RAY, "start", "--block", *args], env, log)

    def wait_started(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while STARTED_LINE not in self.log.read_text(errors="replace"):
            assert self.popen.poll() is None, self.output()
            assert time.monotonic() < deadline, f"not started within {timeout_s:g} s: {self.output()}"
            time.sleep(0.1)
        self.track()


def head_args(
    port: int, temp_dir: Path, resources: dict[str, float], system_config: dict[str, Any]
) -> list[str]:
    """A head that runs no GPU work: the coordinator's resource, its own ports (another test's head may
    hold Ray's defaults), no dashboard."""
    return [
        "--head", f"--port={port}", "--num-cpus=1", f"--resources={json.dumps(resources)}",
        f"--temp-dir={temp_dir}", "--include-dashboard=false", f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", f"--object-store-memory={128 * 1024**2}",
        f"--system-config={json.dumps(system_config)}",
    ]  # fmt: skip


def worker_node_args(address: str, temp_dir: Path, resources: dict[str, float]) -> list[str]:
    """A simulated machine: no CPUs for tasks, its virtual GPUs as card resources."""
    return [
        f"--address={address}", "--num-cpus=0", f"--resources={json.dumps(resources)}",
        f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
        f"--object-store-memory={80 * 1024**2}",
    ]  # fmt: skip


class Driver:
    """A short-lived driver of the cluster (``python -m tests.farm.ray_processes COMMAND ...``), in the
    background until ``result``."""

    def __init__(self, command: str, address: str, *args: str, env: dict[str, str]):
        self.command = command
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.farm.ray_processes", command, address, *args],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def result(self, timeout_s: float = 300.0) -> dict[str, Any]:
        try:
            stdout, stderr = self.popen.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            stdout, stderr = self.popen.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        failed = f"driver {self.command!r} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
        assert self.popen.returncode == 0 and lines, failed
        return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def run_driver(
    command: str, address: str, *args: str, env: dict[str, str], timeout_s: float = 300.0
) -> dict[str, Any]:
    """A driver run to its end; what it returned."""
    return Driver(command, address, *args, env=env).result(timeout_s)


def cpu_seconds(pid: int) -> float:
    """The CPU time a process used so far (user and system)."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the drivers (in their own processes) ---


def _connect(address: str, timeout_s: float = 120.0) -> None:
    import ray

    from cluster.coordinator.actor import NAMESPACE

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
            return
        except Exception:  # the GCS not up yet (a head being restarted)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _start(address: str, config_file: str, endpoints_file: str) -> dict[str, Any]:
    """The coordinator actor started as ``python -m cluster`` starts it; its status once it serves."""
    import ray

    from cluster.config import ChainEndpoints, ClusterConfig
    from cluster.launch import start_coordinator

    config = ClusterConfig.model_validate_json(Path(config_file).read_text())
    endpoints = ChainEndpoints.model_validate_json(Path(endpoints_file).read_text())
    _connect(address)
    actor = start_coordinator(config, endpoints, pass_secret=True)
    status = ray.get(actor.status.remote(), timeout=600)
    return {"answered_at": time.time(), "status": status.model_dump(mode="json")}


def _status(address: str, num_paid: str = "0") -> dict[str, Any]:
    """The coordinator's status once it answers (a restarted actor answers once it serves), and once
    ``num_paid`` rounds were paid and none is unfinished (or after a few minutes, as it then is)."""
    import ray

    from cluster.coordinator.round_state import Outcome
    from cluster.launch import find_coordinator

    asked_at = time.time()  # before connecting: the driver's own start is not counted
    _connect(address)
    deadline = time.monotonic() + 300
    answered_at = None
    while True:
        try:
            actor = find_coordinator()
            status = ray.get(actor.status.remote(), timeout=300)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        answered_at = answered_at or time.time()
        tasks = status.tasks
        settled = tasks.ended(Outcome.PAID) >= int(num_paid) and tasks.num_unfinished == 0
        if settled or time.monotonic() > deadline:
            return {"asked_at": asked_at, "answered_at": answered_at,
                    "status": status.model_dump(mode="json")}  # fmt: skip
        time.sleep(0.5)


def _workers(address: str) -> dict[str, Any]:
    """Each GPU worker actor by name: its process, machine, jobs done and warm models."""
    import ray

    from cluster.coordinator.scheduling.placement import WORKER_NAME_PREFIX

    _connect(address)
    found = {}
    for named in ray.util.list_named_actors(all_namespaces=True):
        if named["name"].startswith(WORKER_NAME_PREFIX):
            handle = ray.get_actor(named["name"], namespace=named["namespace"])
            info, models = ray.get([handle.info.remote(), handle.loaded_models.remote()], timeout=120)
            found[named["name"]] = {
                "pid": info.pid, "node_id": info.node_id, "num_jobs": info.num_jobs, "models": models,
            }  # fmt: skip
    return found


def _stop(address: str) -> dict[str, Any]:
    """As ``python -m cluster`` stops: the nodes paused, running tasks finished; then the workers and the
    actor ended."""
    import ray

    from cluster.launch import find_coordinator

    _connect(address)
    actor = find_coordinator()
    final = ray.get(actor.stop.remote(), timeout=240)
    ray.get(actor.shutdown_workers.remote(), timeout=120)
    ray.kill(actor, no_restart=True)
    return {"status": None if final is None else final.model_dump(mode="json")}


def main(argv: list[str]) -> int:
    command, address, *args = argv
    drivers = {"start": _start, "status": _status, "workers": _workers, "stop": _stop}
    result = drivers[command](address, *args)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
