"""``python -m cluster`` without a chain: the summary names the card model keys the nodes will join with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from cluster.config import load_config
from cluster.coordinator.scheduling.placement import virtual_cards

REPO = Path(__file__).resolve().parents[2]


def test_the_summary_prints_the_keys_the_workers_compute() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "cluster", "rig=cpu-devnet"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        config = load_config(compose(config_name="config", overrides=["rig=cpu-devnet"]))
    joined_with = {f"0x{card.key.hex()}" for card in virtual_cards(config.rig, config.engine)}
    printed = set(re.findall(r"card model key (0x[0-9a-f]{64})", shown.stdout))
    assert printed == joined_with and len(printed) == 2, shown.stdout
    assert "unversioned" not in shown.stdout and "not built yet" not in shown.stdout


def test_the_farm_commands_answer_help_without_a_cluster() -> None:
    for name in ("resume-card", "status", "payout", "retire", "ledger", "drain", "undrain"):
        command = [name, "--help"]
        shown = subprocess.run(
            [sys.executable, "-m", "cluster", *command], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0 and "usage: python -m cluster" in shown.stdout, shown.stderr
        if name == "drain":  # what the preStop hook waits for, said where the operator reads it
            assert "safe to remove" in " ".join(shown.stdout.split()), shown.stdout
