"""A false "no arguments" report against the whole product: the relay signs a receipt when it stores the
arguments, the application keeps it, and while it follows its task it refutes the report on chain, which
slashes the reporters (issue 25, finding 4; docs/protocol-decisions.md)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cluster.chain.anvil import Anvil
from cluster.chain.contracts import AbortReason, NodeStatus, TaskType
from cluster.chain.deploy import Deployment
from cluster.protocol.receipts import receipt_signer
from network.app import ApplicationClient, ClientSettings
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.app.nodes import GPT_ARGS, SimulatedNodes
from tests.contracts.net import ETHER, Net

ARGUMENTS_WAIT_S = 2 * 60
STAKE = 400 * ETHER
FAST = {"poll_interval_s": 0.05, "relay_backoff_s": 0.05, "relay_max_backoff_s": 0.2, "relay_wait_s": 20.0}


@pytest.fixture
def relay_signer() -> LocalAccount:
    return Account.create()


@pytest.fixture
def relay(anvil: Anvil, deployment: Deployment, tmp_path, relay_signer) -> Iterator[RunningRelay]:
    """The real relay, signing its receipts with its own key."""
    config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path / "relay", port=0,
        start_block=deployment.block_number, poll_interval_s=0.05, receipt_key=relay_signer.key.hex(),
        chain_id=deployment.chain_id,
    )  # fmt: skip
    with RunningRelay(config) as running:
        yield running


@pytest.fixture
def nodes(net: Net, relay: RunningRelay, relay_signer) -> SimulatedNodes:
    net.tx(net.task.functions.setRelaySigner(relay_signer.address), net.owner)
    return SimulatedNodes(net, relay.url)


def client(anvil: Anvil, deployment: Deployment, relay: RunningRelay, app: LocalAccount, state) -> Any:
    return ApplicationClient(
        anvil.rpc_url, deployment, relay.url, app, state, settings=ClientSettings(**FAST)
    )


def test_the_application_refutes_a_false_report_with_the_relay_s_receipt(
    net, nodes, anvil, deployment, relay, relay_signer, app, tmp_path
):
    nodes.join()
    fee = ETHER
    # The relay dates its receipt by its clock, the chain by its blocks: on a real chain the two agree
    # within seconds. Here earlier tests' snapshots may have left the chain's time behind: catch it up.
    if net.w3.eth.get_block("latest")["timestamp"] < time.time():
        net.w3.provider.make_request("evm_setNextBlockTimestamp", [int(time.time())])
        net.w3.provider.make_request("evm_mine", [])

    async def submit() -> tuple[int, Any]:
        async with client(anvil, deployment, relay, app, tmp_path / "app") as application:
            task_id = await application.submit(TaskType.GPT, GPT_ARGS, fee_wei=fee)
            return task_id, application.requests.receipt(task_id)

    task_id, receipt = asyncio.run(submit())
    started_at = net.get_task(task_id)["startedAt"]
    assert receipt is not None and receipt.task_id == task_id
    assert receipt_signer(deployment.chain_id, deployment.address("Task"), receipt) == relay_signer.address
    assert receipt.stored_at_s <= started_at + ARGUMENTS_WAIT_S // 2
    honest, *farm = net.selected(task_id)
    nodes.fetch_args(task_id)  # the arguments are there for every node
    net.commit(task_id, 0, b"the honest node's result")
    net.mine_after(ARGUMENTS_WAIT_S)
    for r, node in enumerate(farm, start=1):
        net.tx(net.task.functions.reportNoArguments(task_id, r), node)

    async def follow() -> Any:  # a restarted application: the receipt was kept on disk
        async with client(anvil, deployment, relay, app, tmp_path / "app") as application:
            return await application.wait(task_id, timeout_s=30)

    outcome = asyncio.run(follow())
    assert outcome.status == "aborted" and outcome.reason == AbortReason.NO_ARGUMENTS_REFUTED
    assert outcome.refund_wei == fee - fee // 10  # the honest node is paid for the time it was held
    assert [net.status(n) for n in farm] == [NodeStatus.QUIT] * 2
    assert all(net.ledger.received(n) == -STAKE for n in farm)  # their stakes went to the treasury
    assert net.status(honest) == NodeStatus.AVAILABLE and net.ledger.received(honest) == fee // 10 - STAKE
