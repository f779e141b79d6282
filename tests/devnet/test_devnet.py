"""The README's main command, for real: the local network runs GPT and SD tasks end to end and exits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cluster.chain.anvil import free_port

REPO = Path(__file__).resolve().parents[2]


def test_the_local_network_runs_tasks_and_pays_the_farm(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "HELIUM_BRIDGE_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "network.devnet", "--tasks", "2", "--dir", str(tmp_path / "devnet")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout
    assert done.returncode == 0, (output + done.stderr)[-4000:]
    assert "summary: 2 succeeded, 0 aborted, 0 failed" in output
    assert re.search(r"chat page: http://127\.0\.0\.1:\d+/#key=sk-devnet-", output)
    # both card models passed the reference check before their nodes joined
    assert len(re.findall(r"check: card model \w+ .* workers agree", output)) == 2
    assert re.search(r"task #0 -> chain task \d+ validated: \{\"model\"", output)  # GPT: the 0.json
    assert re.search(r"task #1 -> chain task \d+ validated: 2 PNGs", output)  # SD: two images
    # a GPT task's three nodes share one card model (SD may mix them)
    assert re.search(r"task #0 \(GPT\) ran on 1 card model\(s\)", output)
    earned = float(re.search(r"the farm earned ([\d.]+) CNX", output).group(1))
    assert earned > 0
    # the coordinator's Prometheus endpoint counts the same: 2 tasks x 3 nodes paid
    assert 'helium_task_outcomes{outcome="paid"} 6.0' in output
