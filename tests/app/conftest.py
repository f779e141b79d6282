"""Application tests: the session's anvil and network (tests/conftest.py), the real relay in a thread,
three nodes simulated over the contracts harness, and the application's own account."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account.signers.local import LocalAccount

from cluster.chain.anvil import Anvil
from cluster.chain.deploy import Deployment
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.app.nodes import DEV, SimulatedNodes
from tests.contracts.conftest import net  # noqa: F401  (books checked after each test)
from tests.contracts.net import Net

APP = DEV[20]  # no other test's role: the relay tests use 1-3, 10, 11


@pytest.fixture
def relay(anvil: Anvil, deployment: Deployment, tmp_path) -> Iterator[RunningRelay]:
    config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path / "relay", port=0,
        node_address=deployment.address("Node"), start_block=deployment.block_number,
        poll_interval_s=0.05,
    )  # fmt: skip
    with RunningRelay(config) as running:
        yield running


@pytest.fixture
def nodes(net: Net, relay: RunningRelay) -> SimulatedNodes:  # noqa: F811
    return SimulatedNodes(net, relay.url)


@pytest.fixture
def app(net: Net) -> Iterator[LocalAccount]:  # noqa: F811
    """The application's account. Its gas is handed to ``net``'s ledger before the books are checked
    (the application sends through its own TxSender, which the harness does not see)."""
    first_block = net.w3.eth.block_number + 1
    yield APP
    for number in range(first_block, net.w3.eth.block_number + 1):
        for tx in net.w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == APP.address:
                net.ledger.record_gas(APP.address, net.w3.eth.get_transaction_receipt(tx["hash"]))
