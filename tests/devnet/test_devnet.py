"""The README's main command, for real: the local network runs GPT and SD tasks end to end and exits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cluster.chain.anvil import free_port

REPO = Path(__file__).resolve().parents[2]


NUM_TASKS = 20  # GPT and SD in turn, four in flight: tasks wait in the chain's queue and start on settlement


def test_the_local_network_runs_tasks_and_pays_the_farm(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "HELIUM_BRIDGE_PORT": str(free_port())}
    command = [
        sys.executable, "-m", "network.devnet", "--tasks", str(NUM_TASKS), "--in-flight", "4",
        # the fault drill: a restarted coordinator resumes on its own; a relay outage longer than the
        # application's relay_wait_s (60 s) loses nothing
        "--kill-coordinator", "2", "--stop-relay", "65",
    ]  # fmt: skip
    done = subprocess.run(
        [*command, "--dir", str(tmp_path / "devnet")], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, (output + done.stderr)[-4000:]
    assert f"summary: {NUM_TASKS} succeeded, 0 aborted, 0 failed" in output
    assert len(re.findall(r"fault: coordinator killed \(\d of 2\)", output)) == 2
    assert "fault: relay stopped for 65 s" in output and "fault: relay back" in output
    # every transaction of the farm succeeded: none ran out of gas and was sent again (12 did in 6 tasks)
    mined = int(re.search(r"farm transactions on chain: (\d+) mined, 0 failed", output).group(1))
    # six joins (a node account is funded only when its balance is short), then per task 3 commits,
    # 3 disclosures and 1 upload
    assert mined >= 6 + NUM_TASKS * 7
    assert re.search(r"chat page: http://127\.0\.0\.1:\d+/#key=sk-devnet-", output)
    # both card models passed the reference check before their nodes joined
    assert len(re.findall(r"check: card model \w+ .* workers agree", output)) == 2
    assert re.search(r"task #0 -> chain task \d+ validated: \{\"model\"", output)  # GPT: the 0.json
    assert re.search(r"task #1 -> chain task \d+ validated: 2 PNGs", output)  # SD: two images
    # a GPT task's three nodes share one card model (SD may mix them)
    assert re.search(r"task #0 \(GPT\) ran on 1 card model\(s\)", output)
    earned = float(re.search(r"the farm earned ([\d.]+) CNX", output).group(1))
    assert earned > 0
    # the coordinator's Prometheus endpoint counts the same: every task's 3 nodes paid
    assert f'helium_task_outcomes{{outcome="paid"}} {3.0 * NUM_TASKS}' in output
