"""The Hydra config tree composes, takes overrides, and refuses bad values naming the option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cluster.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_tree_is_the_cpu_devnet():
    config = load_config(_compose())
    assert (config.rig.name, config.network.name, config.engine.text) == (
        "cpu-devnet",
        "devnet",
        "transformers",
    )
    groups = [(g.card_name, g.vram_gb, g.count) for g in config.rig.virtual_gpus]
    assert len({name for name, _, _ in groups}) >= 2, (
        "the devnet needs two card models to exercise GPT grouping"
    )
    assert config.engine.deterministic is True


def test_overrides_reach_the_typed_config():
    config = load_config(
        _compose("rig.places_per_gpu=4", "network.chain.rpc_url=http://10.0.0.5:8545", "engine.text=vllm")
    )
    assert config.rig.places_per_gpu == 4
    assert config.network.chain.rpc_url == "http://10.0.0.5:8545"
    assert config.engine.text == "vllm"


def test_state_dir_follows_the_environment(monkeypatch):
    monkeypatch.setenv("HELIUM_STATE_DIR", "/var/lib/helium")
    assert load_config(_compose()).state_dir == "/var/lib/helium"


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ("rig.places_per_gpu=0", "rig.places_per_gpu"),
        ("rig.device=tpu", "rig.device"),
        ("engine.text=llama.cpp", "engine.text"),
        ("rig.vram_budget_fraction=1.5", "rig.vram_budget_fraction"),
        ("+rig.typo_option=1", "rig.typo_option"),
        ("rig.virtual_gpus=[]", "rig"),
    ],
)
def test_invalid_values_name_the_option(override, option):
    with pytest.raises(ConfigError) as err:
        load_config(_compose(override))
    assert option in str(err.value)


def test_an_option_renamed_in_this_release_names_its_new_name():
    with pytest.raises(ConfigError, match=r"rig.slots_per_gpu is now rig.places_per_gpu"):
        load_config(_compose("+rig.slots_per_gpu=2"))


def test_a_deployment_file_gives_the_addresses_and_first_block(tmp_path):
    from cluster.chain.artifacts import NETWORK_CONTRACTS
    from cluster.chain.deploy import Deployment
    from cluster.config import ChainEndpoints

    addresses = {name: "0x" + f"{i + 1:040x}" for i, name in enumerate(NETWORK_CONTRACTS)}
    Deployment(chain_id=31337, owner="0x" + "9" * 40, addresses=addresses, block_number=42).save(
        tmp_path / "deployment.json"
    )
    network = load_config(
        _compose(
            "network.chain.rpc_url=http://chain",
            "network.relay_url=http://relay",
            f"network.chain.deployment_file={tmp_path}/deployment.json",
        )
    ).network
    endpoints = ChainEndpoints.of(network)
    assert endpoints.start_block == 42 and endpoints.addresses["Task"].lower() == addresses["Task"]

    (tmp_path / "deployment.json").write_text('{"addresses": {}}')  # not a deployment this version writes
    with pytest.raises(ConfigError, match=r"deployment_file=.*cannot be read: unsupported deployment format"):
        ChainEndpoints.of(network)


def _run_cluster(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELIUM_STATE_DIR": "/tmp/helium-test-state"}
    return subprocess.run(
        [sys.executable, "-m", "cluster", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_entry_point_accepts_overrides():
    done = _run_cluster("rig=cpu-devnet", "rig.places_per_gpu=2")
    assert done.returncode == 0, done.stderr
    assert "6 x Devnet Virtual Card A" in done.stdout  # 3 virtual GPUs x 2 slots
    assert "gpt-task-args.json" in done.stdout and "sd-task-args.json" in done.stdout


def test_entry_point_exits_2_on_a_bad_override():
    done = _run_cluster("rig.places_per_gpu=0")
    assert done.returncode == 2
    assert "rig.places_per_gpu" in done.stderr


def test_the_public_network_takes_its_endpoints_from_the_environment(monkeypatch):
    for name in ("HELIUM_RPC_URL", "HELIUM_CHAIN_ID", "HELIUM_DEPLOYMENT_FILE", "HELIUM_RELAY_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="HELIUM_RPC_URL"):
        load_config(_compose("network=public"))
    monkeypatch.setenv("HELIUM_RPC_URL", "https://rpc.example")
    monkeypatch.setenv("HELIUM_CHAIN_ID", "8453")
    monkeypatch.setenv("HELIUM_DEPLOYMENT_FILE", "/config/deployment.json")
    monkeypatch.setenv("HELIUM_RELAY_URL", "https://relay.example")
    network = load_config(_compose("network=public")).network
    assert (network.chain.rpc_url, network.chain.chain_id, network.relay_url) == (
        "https://rpc.example", 8453, "https://relay.example",
    )  # fmt: skip
    assert network.chain.deployment_file == "/config/deployment.json" and network.chain.confirmations == 2
