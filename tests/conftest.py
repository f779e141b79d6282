"""Fixtures shared by every test that needs a chain: one anvil per session, the network deployed on it once,
and a chain snapshot per test so tests stay independent.

Defined here, once, so that the chain, contract, relay, coordinator and application tests share one anvil.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from cluster.chain.anvil import Anvil
from cluster.chain.deploy import Deployment, deploy_network


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    with Anvil(num_accounts=30) as node:
        yield node


@pytest.fixture(scope="session")
def deployment(anvil: Anvil) -> Deployment:
    """Deployed before any test's snapshot is taken, so every test starts from the fresh network."""
    web3 = anvil.web3()
    return deploy_network(web3, web3.eth.accounts[0])


@pytest.fixture
def w3(anvil: Anvil) -> Iterator[Web3]:
    """A Web3 on the session's anvil; the chain is reverted to its state before the test afterwards."""
    web3 = anvil.web3()
    snapshot = web3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield web3
    finally:
        web3.provider.make_request("evm_revert", [snapshot])
