"""The coordinator process killed at the worst moments of a task, then restarted: nothing lost or doubled.

Each case runs a real process that dies with os._exit at a checkpoint of the task flow (before the
commitment, after it was sent, after the disclosure, before the upload), then a second process with the
same state directory. Every task must complete and be paid, and no node may be slashed; a sampled task's
lone round killed after its commitment goes on to its audit (issue 28).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from cluster.chain.accounts import OperatorKeys
from cluster.coordinator.round_state import Outcome
from cluster.status.model import CoordinatorStatus
from tests.coordinator import crash_runner
from tests.coordinator.crash_runner import CRASH_EXIT_CODE
from tests.coordinator.factories import (
    CARD,
    FUNDER,
    create_sampled,
    create_task,
    endpoints,
    gpt_args,
    mine,
    upload,
)

REPO = Path(__file__).resolve().parents[2]


def run_coordinator(config: dict, path: Path) -> subprocess.CompletedProcess[str]:
    path.write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tests.coordinator.crash_runner", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def joined_farm(w3, anvil, deployment, relay, tmp_path: Path) -> dict:
    """A new operator's three nodes joined: the nodes must exist before the task is created, so a first
    coordinator joins them and stops (in this process: only the two after it need to be processes of
    their own, one to die). Returns the runner's config."""
    _, mnemonic = Account.create_with_mnemonic()
    operator = OperatorKeys.from_mnemonic(mnemonic).operator.address
    w3.eth.send_transaction({"from": FUNDER.address, "to": operator, "value": 5_000 * 10**18})
    config = {
        "endpoints": endpoints(anvil.rpc_url, deployment, relay.url).model_dump(),
        "state_dir": str(tmp_path / "state"), "cards": [CARD.join_args] * 3,
        "mnemonic": mnemonic, "task_ids": [], "timeout_s": 60,
    }  # fmt: skip
    (tmp_path / "join.json").write_text(json.dumps(config))
    assert crash_runner.main(str(tmp_path / "join.json")) == 0
    return config


@pytest.mark.parametrize("crash_at", ["before_commit", "after_commit", "after_disclose", "before_upload"])
def test_a_killed_coordinator_resumes_every_task_without_a_slash(
    crash_at,
    w3,
    anvil,
    deployment,
    relay,
    tiny_lm_dir,
    tmp_path,
):
    config = joined_farm(w3, anvil, deployment, relay, tmp_path)
    args = gpt_args(tiny_lm_dir, seed=7)
    task_id = create_task(w3, deployment, args)
    asyncio.run(upload(relay, task_id, args))
    config["task_ids"] = [task_id]

    crashed = run_coordinator({**config, "crash_at": crash_at}, tmp_path / "crash.json")
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    resumed = run_coordinator(config, tmp_path / "resume.json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    status = CoordinatorStatus.model_validate_json(resumed.stdout.strip().splitlines()[-1])
    assert status.tasks.ended(Outcome.PAID) == 3, status
    task = deployment.bind(w3).contract("Task")
    assert list(task.events.TaskNodeSlashed().get_logs(from_block=deployment.block_number)) == []
    uploaded = task.events.TaskResultUploaded().get_logs(from_block=deployment.block_number)
    assert [e["args"]["taskId"] for e in uploaded] == [task_id]


def test_a_coordinator_killed_after_a_sampled_commitment_uploads_starts_the_audit_and_is_paid(
    w3, anvil, deployment, relay, tiny_lm_dir, tmp_path
):
    """Issue 28's lone round across a kill: the process dies once the commitment is sent (its row not yet
    marked), the draw's blocks are mined while no coordinator runs (260: blockhash(c + 1) reads zero, so
    the task is audited), and the next process re-sends nothing, uploads the sealed files, starts the
    audit, runs it on the farm's two other nodes and is paid for all three rounds."""
    task = deployment.bind(w3).contract("Task")
    owner = {"from": deployment.owner}  # both reverted with the test's snapshot
    task.functions.setAuditRate(10).transact(owner)
    task.functions.fundAuditPool().transact(owner | {"value": 5 * 10**18})
    config = joined_farm(w3, anvil, deployment, relay, tmp_path)

    args = gpt_args(tiny_lm_dir, seed=8)
    task_id = create_sampled(w3, deployment, args)
    asyncio.run(upload(relay, task_id, args))
    config |= {"task_ids": [task_id], "rounds_per_task": None}

    crashed = run_coordinator({**config, "crash_at": "after_commit"}, tmp_path / "crash.json")
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    mine(w3, 260)  # the draw's blocks, mined while the farm is down
    resumed = run_coordinator(config, tmp_path / "resume.json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    status = CoordinatorStatus.model_validate_json(resumed.stdout.strip().splitlines()[-1])
    assert status.tasks.ended(Outcome.PAID) == 3, status
    events = ("TaskResultCommitmentSubmitted", "TaskAuditStarted", "TaskNodeSlashed", "TaskSuccess")
    since = deployment.block_number
    logs = {name: getattr(task.events, name)().get_logs(from_block=since) for name in events}
    assert [e["args"]["taskId"] for e in logs["TaskAuditStarted"]] == [task_id]
    assert len(logs["TaskResultCommitmentSubmitted"]) == 3  # round 0's once, across the kill
    assert logs["TaskNodeSlashed"] == [] and [e["args"]["taskId"] for e in logs["TaskSuccess"]] == [task_id]
