"""The README's main command, for real: the local network runs GPT and SD tasks end to end and exits.

One run serves every check of the devnet (it is the suite's longest test): its output when not a
terminal, its log files, the fault drill, the chat model's answers, and, while the network is held up
after the tasks (``--hold``), ``python -m cluster status --json`` and a scrape of the coordinator's
metrics against the dashboard's and the alert rules' expressions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from cluster.chain.anvil import free_port
from cluster.status.model import FarmStatus
from network.devnet.text_model import CORPUS_PATH, corpus_words, share_of_corpus_words
from tests.deploy import monitoring

REPO = Path(__file__).resolve().parents[2]
NUM_TASKS = 20  # GPT and SD in turn, four in flight: tasks wait in the chain's queue and start on settlement
DEVNET_LINE = re.compile(r"^\[devnet\] \d\d:\d\d:\d\d \S")
RUN_LIMIT_S = 600


def run_held_devnet(
    tmp_path: Path, chat_model_dir: Path
) -> tuple[str, subprocess.CompletedProcess, str, int]:
    """Run the devnet until it holds the network up; inspect it there (status, metrics); let it finish.

    Returns its whole output, the status command's run, the metrics scrape and the devnet's exit code.
    """
    root = tmp_path / "devnet"
    shutil.copytree(chat_model_dir, root / "models" / chat_model_dir.name)  # trained once per session
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "HELIUM_BRIDGE_PORT": str(free_port())}
    command = [
        sys.executable, "-m", "network.devnet", "--tasks", str(NUM_TASKS), "--in-flight", "4", "--hold",
        # the fault drill: a restarted coordinator resumes on its own; a relay outage longer than the
        # application's relay_wait_s loses nothing (shortened from 60 s to keep the suite's time)
        "--kill-coordinator", "2", "--relay-wait", "10", "--stop-relay", "15", "--dir", str(root),
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
            devnet.stdin.close()  # let it stop
            tail = devnet.stdout.read()
            return head + tail, status, scrape, devnet.wait()
        finally:
            limit.cancel()


@pytest.mark.timeout(RUN_LIMIT_S + 120)  # about 4 minutes alone; more on a shared, busy machine
def test_the_local_network_runs_tasks_and_pays_the_farm(tmp_path, chat_model_dir):
    output, status_run, scrape, returncode = run_held_devnet(tmp_path, chat_model_dir)
    (tmp_path / "stdout.txt").write_text(output)  # kept with stderr.txt in pytest's tmp folder
    assert returncode == 0, output[-4000:]
    check_quiet_output(output, (tmp_path / "stderr.txt").read_text(), tmp_path / "devnet/run/logs")
    check_status(status_run)
    check_metrics(scrape)
    check_tasks(output)


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


def check_tasks(output: str) -> None:
    assert f"summary: {NUM_TASKS} succeeded, 0 aborted, 0 failed" in output
    assert re.search(rf"footer: validated {NUM_TASKS} \| aborted 0 \| failed 0 \| slashed 0", output)
    assert len(re.findall(r"fault: coordinator killed \(\d of 2\)", output)) == 2
    assert "fault: relay stopped for 15 s" in output and "fault: relay back" in output
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
    earned = float(re.search(r"the farm earned ([\d.]+) CNX", output).group(1))
    assert earned > 0 and f"| earned {earned:.4f} CNX |" in output  # the footer's, once the farm settled
    # the coordinator's Prometheus endpoint counts the same: every task's 3 nodes paid
    assert f'helium_task_outcomes{{outcome="paid"}} {3.0 * NUM_TASKS}' in output


def check_status(status_run: subprocess.CompletedProcess) -> None:
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
