"""The bridge's whole world, once per module: the session's anvil and contracts, a relay, a real
coordinator with three nodes on the real engines (tiny models, no Ray), and bridges served by uvicorn.

The chain is snapshotted before and reverted after, so the nodes joined here never meet other tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cluster.chain.accounts import OperatorKeys
from cluster.chain.anvil import DEV_MNEMONIC
from cluster.protocol.cards import CardModel
from network.bridge import ApiKey, BridgeConfig, ModelSpec, RunningBridge, create_bridge
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.bridge.bridge_process import BridgeProcess
from tests.coordinator.factories import CoordinatorThread, coordinator_settings
from tests.coordinator.local_runner import LocalJobRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
Account.enable_unaudited_hdwallet_features()
DEV = {i: Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in (25, 26, 27)}
WALLET, FUNDER, SECOND_WALLET = DEV[25], DEV[26], DEV[27]  # no other test uses these
CARD = CardModel("Bridge Test Card", 8, "transformers-test")
KEY, LIMITED_KEY = "sk-bridge-test-key", "sk-bridge-limited"


@dataclass
class World:
    anvil: Any
    deployment: Any
    deployment_file: Path
    relay: RunningRelay
    runner: LocalJobRunner
    models: dict[str, Path]

    def config(self, data_dir: Path, **overrides: Any) -> BridgeConfig:
        fields: dict[str, Any] = dict(
            rpc_url=self.anvil.rpc_url, relay_url=self.relay.url, deployment_file=self.deployment_file,
            data_dir=data_dir, poll_interval_s=0.1, sweep_interval_s=0.3,
            models=[
                ModelSpec(id="tiny-chat", path=str(self.models["gpt"]), task_type="gpt",
                          defaults={"max_new_tokens": 8}),
                ModelSpec(id="tiny-sd", path=str(self.models["sd"]), task_type="sd", fee_wei=10**17,
                          defaults={"steps": 2, "cfg": 5.0}),
            ],
            api_keys=[ApiKey(key=KEY, name="tests", rate_per_s=100, burst=1000),
                      ApiKey(key=LIMITED_KEY, name="limited", rate_per_s=0.01, burst=2)],
        )  # fmt: skip
        fields.update(overrides)
        return BridgeConfig(**fields)

    def bridge(self, data_dir: Path, account: LocalAccount = WALLET, **overrides: Any) -> RunningBridge:
        return RunningBridge(create_bridge(self.config(data_dir, **overrides), account=account))


@pytest.fixture(scope="session")
def bridge_models(tmp_path_factory: pytest.TempPathFactory, chat_model_dir: Path) -> dict[str, Path]:
    """The devnet's models: its trained chat model (answers in words) and a tiny SD."""
    from cluster.workers.models.sd_builders import build_tiny_sd

    root = tmp_path_factory.mktemp("bridge-models")
    return {"gpt": chat_model_dir, "sd": build_tiny_sd(root / "tiny-sd")}


@pytest.fixture(scope="module")
def world(anvil, deployment, bridge_models, tmp_path_factory) -> Iterator[World]:
    web3 = anvil.web3()
    snapshot = web3.provider.make_request("evm_snapshot", [])["result"]
    root = tmp_path_factory.mktemp("bridge-world")
    deployment_file = root / "deployment.json"
    deployment.save(deployment_file)
    _, mnemonic = Account.create_with_mnemonic()
    keys = OperatorKeys.from_mnemonic(mnemonic)
    web3.eth.send_transaction({"from": FUNDER.address, "to": keys.operator.address, "value": 5_000 * 10**18})
    relay_config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=root / "relay", port=0,
        start_block=deployment.block_number, poll_interval_s=0.05,
    )  # fmt: skip
    runner = LocalJobRunner(root / "cache")
    try:
        with RunningRelay(relay_config) as relay:
            settings = coordinator_settings(
                anvil.rpc_url, deployment, relay.url, root / "cluster", cards=[CARD] * 3
            )
            with CoordinatorThread(settings, keys, runner):
                yield World(anvil, deployment, deployment_file, relay, runner, bridge_models)
    finally:
        runner.gate.set()
        web3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture(scope="module")
def bridge(world: World, tmp_path_factory) -> Iterator[RunningBridge]:
    with world.bridge(tmp_path_factory.mktemp("bridge")) as running:
        yield running


@pytest.fixture(scope="module")
def bridge_process(anvil, deployment, tmp_path_factory) -> Iterator[BridgeProcess]:
    """``python -m network.bridge`` in its own process, for requests that might kill it."""
    with BridgeProcess(anvil.rpc_url, deployment, tmp_path_factory.mktemp("bridge-process")) as running:
        yield running
