"""The README's main command, for real: the local network runs GPT and SD tasks end to end and stops.

One run serves every check of the devnet (it is the suite's longest test): its output when not a
terminal, its log files, the fault drill, the chat model's answers, and, while the network is held up
after the tasks (``--hold``), ``python -m cluster status --json``, a scrape of the coordinator's metrics
against the dashboard's and the alert rules' expressions, and a real Prometheus scraping it: every
dashboard query evaluated, the rules healthy and quiet, and an alert firing once a card model is paused.
Then its stop: anvil killed first (as Ctrl-C does to its process group), SIGTERM to the devnet, and
within 10 s the devnet and every process it started are gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.chain.anvil import free_port
from cluster.coordinator.store import RoundStore
from cluster.status.model import FarmStatus
from network.devnet.text_model import CORPUS_PATH, corpus_words, share_of_corpus_words
from tests.deploy import monitoring
from tests.deploy.prometheus import PrometheusServer
from tests.processes import descendants, is_alive

REPO = Path(__file__).resolve().parents[2]
NUM_TASKS = 12  # GPT and SD in turn, four in flight: tasks wait in the chain's queue and start on settlement
DEVNET_LINE = re.compile(r"^\[devnet\] \d\d:\d\d:\d\d \S")
RUN_LIMIT_S = 600
STOP_LIMIT_S = 10.0  # from the signal to the last of its processes gone, whichever of them died first
NVML_ONLY = {"helium_gpu_utilization_ratio", "helium_gpu_memory_used_bytes"}  # no series on a CPU rig


@dataclass
class HeldRun:
    """What one devnet run showed: its output, ``status --json``, a metrics scrape, what a real Prometheus
    saw, its exit code, how long its stop took and which of its processes were left."""

    output: str
    status: subprocess.CompletedProcess
    scrape: str
    prometheus: dict[str, object]
    returncode: int
    stop_s: float
    left: dict[int, str]


def run_held_devnet(tmp_path: Path, chat_model_dir: Path) -> HeldRun:
    """Run the devnet until it holds the network up; inspect it there (status, metrics, Prometheus); then
    kill its chain and signal it to stop."""
    root = tmp_path / "devnet"
    shutil.copytree(chat_model_dir, root / "models" / chat_model_dir.name)  # trained once per session
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "HELIUM_BRIDGE_PORT": str(free_port())}
    command = [
        sys.executable, "-m", "network.devnet", "--tasks", str(NUM_TASKS), "--in-flight", "4", "--hold",
        # the fault drill: a restarted coordinator resumes on its own; a relay outage longer than the
        # application's relay_wait_s loses nothing (shortened from 60 s to keep the suite's time)
        "--kill-coordinator", "2", "--relay-wait", "4", "--stop-relay", "6", "--dir", str(root),
    ]  # fmt: skip
    with (tmp_path / "stderr.txt").open("w") as stderr, subprocess.Popen(
        command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
    ) as devnet:  # fmt: skip
        limit = threading.Timer(RUN_LIMIT_S, devnet.kill)  # a hung run fails instead of hanging the suite
        limit.start()
        try:
            lines = []
            for line in devnet.stdout:  # the devnet's own lines, until it holds the network up
                lines.append(line)
                if "holding the network up" in line:
                    break
            head = "".join(lines)
            assert "holding the network up" in head, (
                head[-4000:] + (tmp_path / "stderr.txt").read_text()[-4000:]
            )
            address = re.search(r"RAY_ADDRESS=(\S+) python -m cluster status", head).group(1)
            status = subprocess.run(
                [sys.executable, "-m", "cluster", "status", "--json", "--address", address], cwd=REPO,
                env={**env, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            metrics_url = re.search(r"metrics at (http://\S+/metrics);", head).group(1)
            with urllib.request.urlopen(metrics_url, timeout=10) as response:
                scrape = response.read().decode()
            farm = FarmStatus.model_validate_json(status.stdout) if status.returncode == 0 else None
            seen = watch_with_prometheus(metrics_url, root, farm, tmp_path / "prometheus")
            stop_s, left = stop_without_its_chain(devnet)
            tail = devnet.stdout.read()
            return HeldRun(head + tail, status, scrape, seen, devnet.wait(), stop_s, left)
        finally:
            limit.cancel()


def watch_with_prometheus(
    metrics_url: str, root: Path, farm: FarmStatus | None, folder: Path
) -> dict[str, object]:
    """A real Prometheus scraping the coordinator every second and evaluating the alert rules: the rules'
    health and alerts on the healthy farm, every dashboard query's answer, then the alerts once a card
    model is paused as the card guard records it (``RoundStore.pause_card``, durable before the guard
    pauses the nodes on chain): HeliumCardModelPaused has no ``for:``, so the rules are loaded as they are.
    """
    assert farm is not None, "status --json failed"
    with PrometheusServer(urllib.parse.urlsplit(metrics_url).netloc, folder) as prometheus:
        prometheus.wait_for(
            "a scrape of the coordinator", lambda: prometheus.query('up{job="helium-farm"} == 1')
        )
        rules = prometheus.wait_for("every rule evaluated", lambda: evaluated_rules(prometheus))
        alerts_before = prometheus.api("alerts")["alerts"]
        store = RoundStore(root / "run" / "cluster" / "coordinator")
        try:
            store.pause_card(
                bytes.fromhex(farm.cards[0].key[2:]), "the test: a disagreement, as the guard records it"
            )
        finally:
            store.close()

        def firing() -> list[dict]:
            return [a for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"]

        alerts_after = prometheus.wait_for("an alert firing", firing)
        # the coordinator's metrics are refreshed every 10 s: by now Prometheus holds many scrapes of them
        answers = {where: prometheus.query(expr) for where, expr in monitoring.panel_queries().items()}
    return {"rules": rules, "alerts_before": alerts_before, "alerts_after": alerts_after, "panels": answers}


def evaluated_rules(prometheus: PrometheusServer) -> list[dict]:
    rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    evaluated = rules and not any(rule["lastEvaluation"].startswith("0001-") for rule in rules)  # zero time
    return rules if evaluated else []


def stop_without_its_chain(devnet: subprocess.Popen) -> tuple[float, dict[int, str]]:
    """Kill anvil first (Ctrl-C reaches the whole process group, and anvil goes first), then SIGTERM the
    devnet (as ``timeout`` and process managers stop it). Seconds from the signal until the devnet and
    every process it had started (anvil, Ray's own cluster and its workers) are gone, and any left."""
    started = descendants(devnet.pid)
    (anvil,) = [pid for pid, command in started.items() if "/anvil" in command.split(" ")[0]]
    os.kill(anvil, signal.SIGKILL)
    while is_alive(anvil):
        time.sleep(0.05)
    signalled = time.monotonic()
    devnet.send_signal(signal.SIGTERM)
    while devnet.poll() is None or any(is_alive(pid) for pid in started):
        if time.monotonic() - signalled > 6 * STOP_LIMIT_S:  # only a broken stop gets here
            break
        time.sleep(0.05)
    return time.monotonic() - signalled, {pid: cmd for pid, cmd in started.items() if is_alive(pid)}


@pytest.mark.timeout(RUN_LIMIT_S + 120)  # about 4 minutes alone; more on a shared, busy machine
def test_the_local_network_runs_tasks_and_pays_the_farm(tmp_path, chat_model_dir):
    run = run_held_devnet(tmp_path, chat_model_dir)
    (tmp_path / "stdout.txt").write_text(run.output)  # kept with stderr.txt in pytest's tmp folder
    assert run.returncode == 0, run.output[-4000:]
    check_quiet_output(run.output, (tmp_path / "stderr.txt").read_text(), tmp_path / "devnet/run/logs")
    farm = check_status(run.status)
    check_metrics(run.scrape)
    check_prometheus(run.prometheus)
    check_tasks(run.output, farm)
    check_stop(run)


def check_quiet_output(output: str, stderr: str, log_dir: Path) -> None:
    """Only the devnet's own lines: no Ray actor prefix, no library warning, nothing on stderr."""
    assert stderr == "", stderr[-4000:]
    strays = [line for line in output.splitlines() if not DEVNET_LINE.match(line)]
    assert not strays, strays[:10]
    assert "(GpuWorker" not in output and "(CoordinatorActor" not in output and "Warning" not in output
    # ... and the logs are in files, where the view says
    assert f"logs of every process: {log_dir}" in output
    # Ray's driver logs (its start, and where it is on, its token-authentication note) go to the file
    assert re.search(r"\bray\._private\.", (log_dir / "devnet.log").read_text())
    actor_logs = "".join(p.read_text(errors="replace") for p in (log_dir / "ray").glob("worker-*.err"))
    assert actor_logs.count("[worker] ready") >= 6 and ":actor_name:CoordinatorActor" in actor_logs


def check_stop(run: HeldRun) -> None:
    """Its chain gone first, the devnet stopped within 10 s of the signal and left no process behind
    (it took about 50 s, retrying the dead chain; and a SIGTERM while it started left every child)."""
    assert run.left == {}, run.left
    assert run.stop_s < STOP_LIMIT_S, f"stopped in {run.stop_s:.1f} s"
    assert "the chain is gone: the farm stops without quitting its nodes" in run.output


def check_prometheus(seen: dict) -> None:
    """The rules load and evaluate without error; a healthy farm fires nothing; a paused card model fires
    HeliumCardModelPaused, naming the alert the operator reads; every dashboard query answers, all with
    series but NVML's (no GPU here)."""
    assert {rule["name"] for rule in seen["rules"]} == {rule["alert"] for rule in monitoring.rules()}
    assert all(rule["health"] == "ok" for rule in seen["rules"]), seen["rules"]
    assert seen["alerts_before"] == []
    (paused,) = seen["alerts_after"]
    assert paused["labels"]["alertname"] == "HeliumCardModelPaused" and float(paused["value"]) == 1
    empty = {where for where, series in seen["panels"].items() if not series}
    nvml = {
        where
        for where, expr in monitoring.panel_queries().items()
        if monitoring.metric_names(expr) <= NVML_ONLY
    }
    assert empty == nvml, empty ^ nvml


def check_tasks(output: str, farm: FarmStatus) -> None:
    assert f"summary: {NUM_TASKS} succeeded, 0 aborted, 0 failed" in output
    assert re.search(rf"footer: validated {NUM_TASKS} \| aborted 0 \| failed 0 \| slashed 0", output)
    assert len(re.findall(r"fault: coordinator killed \(\d of 2\)", output)) == 2
    assert "fault: relay stopped for 6 s" in output and "fault: relay back" in output
    # every transaction of the farm succeeded: none ran out of gas and was sent again (12 did in 6 tasks)
    mined = int(re.search(r"farm transactions on chain: (\d+) mined, 0 failed", output).group(1))
    # six joins (a node account is funded only when its balance is short), then per task 3 commits,
    # 3 disclosures and 1 upload
    assert mined >= 6 + NUM_TASKS * 7
    assert re.search(r"chat page: http://127\.0\.0\.1:\d+/#key=sk-devnet-", output)
    # both card models passed the reference check before their nodes joined
    assert len(re.findall(r"check: card model \w+ .* workers agree", output)) == 2
    # one line per change of a task's state, not one per node and event
    assert len(re.findall(r"task #0 GPT \(chain task \d+\) running on 3 nodes", output)) == 1
    # a GPT task's three nodes share one card model (SD may mix them); its answer is words of the text
    answers = re.findall(
        r"task #\d+ GPT \(chain task \d+\) validated in [\d.]+ s on 1 card model\(s\): (.*)", output
    )
    assert len(answers) == NUM_TASKS // 2, output[-4000:]
    words = corpus_words(CORPUS_PATH.read_text())
    for answer in answers:
        assert share_of_corpus_words(json.loads(answer), words) >= 0.8, answer
    assert re.search(
        r"task #1 SD \(chain task \d+\) validated in [\d.]+ s on \d card model\(s\): 2 PNGs", output
    )
    # the footer's once the farm settled: what the farm's status says it earned
    assert farm.earned_wei > 0 and f"| earned {farm.earned_wei / 10**18:.4f} CNX |" in output
    # the coordinator's Prometheus endpoint counts the same: every task's 3 nodes paid
    assert f'helium_task_outcomes{{outcome="paid"}} {3.0 * NUM_TASKS}' in output


def check_status(status_run: subprocess.CompletedProcess) -> FarmStatus:
    """``status --json`` against the running devnet: the workers and the node accounts, QoS and stake."""
    assert status_run.returncode == 0, status_run.stderr[-4000:]
    farm = FarmStatus.model_validate_json(status_run.stdout)
    assert len(farm.cards) == 2 and all(card.check and not card.is_paused for card in farm.cards)
    workers = farm.workers
    assert len(workers) == 6 and all(w.is_alive for w in workers)
    # the reference check and the tasks ran on them: jobs counted, the chat model warm where GPT ran
    assert sum(w.num_jobs for w in workers) >= NUM_TASKS * 3 // 2 and all(w.num_jobs > 0 for w in workers)
    assert any(any("tiny-chat" in m for m in w.warm_models) for w in workers)
    # VRAM: on this CPU rig, the bytes of the worker's warm models within its cache's budget
    assert all(0 < w.vram_used_bytes <= w.vram_budget_bytes for w in workers if w.warm_models)
    assert len(farm.nodes) == 6
    for node in farm.nodes:
        assert node.status == "available" and node.qos_score > 0 and node.stake_wei > 0, node
    assert sum(node.earned_wei for node in farm.nodes) == farm.earned_wei > 0
    assert farm.endpoints.is_relay_reachable and farm.endpoints.chain_id == 31337
    assert farm.alerts == [] and farm.last_selected_chain_s is not None
    return farm


def check_metrics(scrape: str) -> None:
    """Every expression of the dashboard and the alert rules names a metric this coordinator exports;
    those the alerts watch have samples."""
    exported = monitoring.exported_metrics(scrape)
    problems = {
        where: p
        for where, e in monitoring.expressions().items()
        if (p := monitoring.problems_with(e, exported))
    }
    assert not problems
    alerted = set().union(*(monitoring.metric_names(rule["expr"]) for rule in monitoring.rules()))
    assert alerted <= monitoring.sampled_metrics(scrape), alerted - monitoring.sampled_metrics(scrape)
