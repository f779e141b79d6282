"""Model downloads at start-up: each model says how it went on the driver; a failure names the model, the
cause and the options, and the start goes on with the others."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir

from cluster.config import load_config
from cluster.prefetch import prefetch_models
from cluster.protocol.errors import ModelInvalid, ModelNotAvailable

REPO = Path(__file__).resolve().parents[2]


def rig_with(models: list[str], cache_dir: Path):
    overrides = [
        "rig=cpu-devnet",
        f"rig.model_cache_dir={cache_dir}",
        f"rig.prefetch_models=[{','.join(models)}]",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return load_config(compose(config_name="config", overrides=overrides)).rig


def test_a_failed_prefetch_is_named_and_the_others_still_come(tmp_path):
    local = tmp_path / "local-model"
    local.mkdir()
    rig = rig_with(["helium-test/not-cached", str(tmp_path / "missing"), str(local)], tmp_path / "cache")
    said: list[str] = []
    outcome = prefetch_models(rig, is_offline=True, say=said.append)

    assert outcome[str(local)] == local  # after two failures, the last model still came
    assert isinstance(outcome["helium-test/not-cached"], ModelNotAvailable)
    assert isinstance(outcome[str(tmp_path / "missing")], ModelInvalid)
    failed = [line for line in said if "prefetch FAILED" in line]
    assert len(failed) == 2
    assert "model 'helium-test/not-cached'" in failed[0] and "offline" in failed[0]  # the model, the cause
    assert all("rig.prefetch_models" in line and "HF_HUB_OFFLINE" in line for line in failed)  # the options
    assert any(re.search(rf"3/3: {re.escape(str(local))} ready in [\d.]+ s$", line) for line in said)
    assert said[0].startswith("[cluster] prefetch 1/3: helium-test/not-cached into ")
    assert "2 of 3 model(s) not prefetched" in said[-1]
