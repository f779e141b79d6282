"""Chain client fixtures: a test-only contract and a faulty RPC hop (anvil and w3: tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from cluster.chain.anvil import Anvil
from tests.chain.rpc_proxy import FaultyRpcProxy

# -- chain client fixtures (accounts, sender, events) -----------------------------------------------------

PROBE_ARTIFACT = Path(__file__).parent / "fixtures" / "Probe.json"


@pytest.fixture(scope="session")
def probe_artifact() -> dict[str, Any]:
    """The test-only Probe contract (tests/chain/fixtures/Probe.sol, rebuilt by tests/build_fixture.mjs)."""
    return json.loads(PROBE_ARTIFACT.read_text())


@pytest.fixture
def probe(w3: Web3, probe_artifact: dict[str, Any]) -> Contract:
    """A fresh Probe deployed by dev account 0 (reverted with the rest of the chain after the test)."""
    factory = w3.eth.contract(abi=probe_artifact["abi"], bytecode=probe_artifact["bytecode"])
    tx_hash = factory.constructor().transact({"from": w3.eth.accounts[0]})
    address = w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"]
    return w3.eth.contract(address=address, abi=probe_artifact["abi"])


@pytest.fixture
def rpc_proxy(anvil: Anvil) -> Iterator[FaultyRpcProxy]:
    """A real HTTP hop in front of the session's anvil that fails on command."""
    with FaultyRpcProxy(anvil.rpc_url) as proxy:
        yield proxy
