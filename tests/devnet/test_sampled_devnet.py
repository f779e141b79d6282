"""``python -m network.devnet --tasks 20 --audit-rate 10``: every task sampled, each validated alone or
audited as its draw said, no failed farm transaction; then, while the network is held up, the
application example of docs/application.md ("Validation") run as written against it gets its result.

The suite's second devnet run (test_devnet.py is the first, with today's three-node tasks and the fault
drills): the issue's must-show for sampled audits end to end (issue 28)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from cluster.chain.anvil import free_port
from cluster.chain.deploy import Deployment
from network.devnet.models import gpt_task
from network.devnet.stack import dev_account

REPO = Path(__file__).resolve().parents[2]
NUM_TASKS = 20
RUN_LIMIT_S = 600
VALIDATED = re.compile(r"\[sampled 1/10, (audited|not audited)\] validated in")


def docs_example() -> str:
    """The Python block of docs/application.md's "Validation" section, as a developer reads it."""
    text = (REPO / "docs" / "application.md").read_text()
    section = text[text.index("## Validation") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


def run_docs_example(rpc_url: str, relay_url: str, deployment: Deployment, args_json: str, state_dir: Path):
    """The docs' example in an async function, with the names it expects bound; what it printed and the
    files it got back."""
    namespace: dict[str, object] = {}
    body = "\n".join("    " + line for line in docs_example().splitlines())
    exec(f"async def example(rpc_url, deployment, relay_url, account, state_dir, args_json, print):\n{body}\n"
         "    return files\n", namespace)  # fmt: skip
    printed: list[str] = []
    account = dev_account(6)  # a dev account the devnet does not use
    files = asyncio.run(
        namespace["example"](  # type: ignore[operator]
            rpc_url,
            deployment,
            relay_url,
            account,
            state_dir,
            args_json,
            lambda *a: printed.append(" ".join(map(str, a))),
        )
    )
    return printed, files


def test_the_devnet_at_audit_rate_10_samples_every_task_and_audits_as_drawn(tmp_path, chat_model_dir):
    root = tmp_path / "devnet"
    shutil.copytree(chat_model_dir, root / "models" / chat_model_dir.name)  # trained once per session
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "HELIUM_BRIDGE_PORT": str(free_port())}
    command = [sys.executable, "-m", "network.devnet", "--tasks", str(NUM_TASKS), "--audit-rate", "10",
               "--in-flight", "4", "--hold", "--plain", "--dir", str(root)]  # fmt: skip
    with (tmp_path / "stderr.txt").open("w") as stderr, subprocess.Popen(
        command, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
    ) as devnet:  # fmt: skip
        limit = threading.Timer(RUN_LIMIT_S, devnet.kill)  # a hung run fails instead of hanging the suite
        limit.start()
        try:
            assert devnet.stdout is not None and devnet.stdin is not None
            lines = []
            for line in devnet.stdout:
                lines.append(line)
                if "holding the network up" in line:
                    break
            head = "".join(lines)
            assert "holding the network up" in head, (
                head[-4000:] + (tmp_path / "stderr.txt").read_text()[-4000:]
            )
            rpc_url = re.search(r"chain (http://\S+), contracts deployed", head).group(1)
            relay_url = re.search(r"relay (http://\S+)", head).group(1)
            deployment = Deployment.load(root / "run" / "deployment.json")
            args_json = gpt_task(root / "models" / chat_model_dir.name, 99)
            printed, files = run_docs_example(rpc_url, relay_url, deployment, args_json, tmp_path / "app")
            devnet.stdin.close()  # the network stops
            output = head + devnet.stdout.read()
            assert devnet.wait() == 0, output[-3000:]
        finally:
            limit.cancel()

    drawn = VALIDATED.findall(output)
    assert len(drawn) == NUM_TASKS, output[-3000:]  # every task sampled, each validated, alone or audited
    assert f"summary: {NUM_TASKS} succeeded, 0 aborted, 0 failed" in output
    mined = re.search(r"farm transactions on chain: (\d+) mined, (\d+) failed", output)
    assert mined is not None and int(mined.group(2)) == 0 and int(mined.group(1)) > 0
    audited = drawn.count("audited")
    shown = re.search(r'helium_sampled_rounds\{kind="audited"\} (\d+)', output)
    assert shown is not None and int(shown.group(1)) == audited  # the farm's metrics agree with the draws
    rounds = re.search(r'helium_sampled_rounds\{kind="audit_rounds"\} (\d+)', output)
    assert rounds is not None and int(rounds.group(1)) == 2 * audited
    # the docs' application: a sampled task (its draw printed: audited or not), its answer downloaded
    assert printed and printed[0].startswith("SAMPLED ") and len(files) == 1
    assert b'"choices"' in files[0]
