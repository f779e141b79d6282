"""Coordinator fixtures: the shared chain and deployment, a relay per test, tiny models, an operator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_account import Account

from cluster.chain.accounts import OperatorKeys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.coordinator.factories import FUNDER


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.workers.models.builders import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture
def relay(anvil, deployment, tmp_path):
    """A real relay following the session's chain, on a loopback port, for one test."""
    from network.relay.background import RunningRelay
    from network.relay.config import RelayConfig

    config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path / "relay", port=0,
        start_block=deployment.block_number, poll_interval_s=0.05,
    )  # fmt: skip
    with RunningRelay(config) as running:
        yield running


@pytest.fixture
def operator(w3) -> OperatorKeys:
    """A fresh operator (its own mnemonic) funded with 5,000 CNX: its nodes meet no other test's."""
    _, mnemonic = Account.create_with_mnemonic()
    keys = OperatorKeys.from_mnemonic(mnemonic)
    w3.eth.send_transaction({"from": FUNDER.address, "to": keys.operator.address, "value": 5_000 * 10**18})
    return keys
