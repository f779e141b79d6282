"""A card model the guard paused stays paused across a restart until the operator lifts the pause.

The guard pauses a card model whose own slots disagree on a task (a broken GPU or driver): disclosing
would get one of the farm's nodes slashed. The first release kept that pause in memory only, so a
restarted coordinator resumed every node of the broken card and it went back to work, to be slashed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.round_state import Outcome
from cluster.coordinator.store import RoundStore
from tests.coordinator.factories import (
    CARD,
    create_task,
    gpt_args,
    pass_the_deadline,
    rounds_end,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner
from tests.faults import CorruptingRunner

REPO = Path(__file__).resolve().parents[2]
# A prefix that names no card model of the farm: the card's own short id with its first digit changed.
OTHER_PREFIX = format((int(CARD.short_id[0], 16) + 1) % 16, "x") + CARD.short_id[1:]


def test_a_paused_card_model_stays_paused_after_a_restart_until_resumed(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    state_dir = tmp_path / "farm" / "coordinator"
    args = gpt_args(tiny_lm_dir, seed=11)
    farm = settings(anvil, deployment, relay, state_dir)
    broken = CorruptingRunner(LocalJobRunner(tmp_path), rounds={1})  # one GPU returns wrong bytes

    async def scenario() -> tuple[list[NodeStatus], dict, dict, dict]:
        async with running_coordinator(farm, operator, broken) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            await run_until(coordinator, lambda: bool(coordinator.status().alerts))
            alert = coordinator.status().alerts
            # paused, nothing committed: the task is cancelled at its deadline and the nodes are Paused
            pass_the_deadline(w3)
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.CANCELLED))
        async with running_coordinator(farm, operator, LocalJobRunner(tmp_path), join=False) as restarted:
            after_restart = await restarted.join_nodes()  # what every start does
            status = restarted.status()
            with pytest.raises(KeyError, match="names 0 of this farm's card models"):
                await restarted.resume_card(
                    "ffffffffff" if not CARD.key.hex().startswith("ff") else "0000000"
                )
            resumed = await restarted.resume_card(CARD.short_id)
            return alert, after_restart, status, resumed

    alert, after_restart, status, resumed = asyncio.run(scenario())
    assert "disagree on task" in alert[0] and f"resume-card {CARD.short_id}" in alert[0]
    assert set(after_restart.values()) == {NodeStatus.PAUSED}  # the first release resumed them here
    assert status.paused_cards == [CARD.key.hex()] and status.alerts == alert
    assert set(resumed.values()) == {NodeStatus.AVAILABLE}
    store = RoundStore(state_dir)
    assert store.paused_cards() == {}
    store.close()


def resume_card_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster", "resume-card", *args], cwd=REPO, env=dict(os.environ),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_an_operator_lifts_a_pause_of_a_stopped_farm_from_its_state_directory(tmp_path):
    store = RoundStore(tmp_path / "coordinator")
    store.pause_card(CARD.key, "slots disagree on task 3")
    store.close()

    unknown = resume_card_cli(OTHER_PREFIX, "--state-dir", str(tmp_path))
    assert unknown.returncode == 1 and CARD.short_id in unknown.stderr
    lifted = resume_card_cli(CARD.short_id, "--state-dir", str(tmp_path))
    assert lifted.returncode == 0 and CARD.key.hex() in lifted.stdout, lifted.stderr

    store = RoundStore(tmp_path / "coordinator")
    assert store.paused_cards() == {}
    store.close()
