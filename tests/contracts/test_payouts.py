"""A payee that refuses a push payment blocks nothing and loses nothing: the amount waits in `credits`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from web3.contract import Contract

from cluster.chain.contracts import NodeStatus, TaskType
from cluster.chain.revert import ContractRevert
from tests.contracts.net import ETHER, GPU_A, Net

REJECTER = json.loads((Path(__file__).parent / "fixtures/Rejecter.json").read_text())
STAKE = 400 * ETHER


@pytest.fixture
def rejecter(net: Net) -> Contract:
    factory = net.w3.eth.contract(abi=REJECTER["abi"], bytecode=REJECTER["bytecode"])
    receipt = net.tx(factory.constructor(), net.accounts[2])
    contract = net.w3.eth.contract(address=receipt["contractAddress"], abi=REJECTER["abi"])
    net.ledger.track(contract.address)
    return contract


def via(net: Net, rejecter: Contract, target: Contract, fn: str, args: list[Any], value: int = 0) -> Any:
    """`target.fn(*args)` sent by the Rejecter contract (the EOA accounts[2] pays gas and value)."""
    data = target.encode_abi(fn, args=args)
    return net.tx(rejecter.functions.exec(target.address, data), net.accounts[2], value)


def test_refused_refund_is_credited_and_withdrawn_later(net: Net, rejecter: Contract):
    net.join_paused(net.accounts[3:6])  # the task could run: it is queued, not refused
    create = [int(TaskType.SD), b"\1" * 32, b"\0" * 32, 0, 1]
    receipt = via(net, rejecter, net.task, "createTask", create, ETHER)
    (task_id,) = [e["taskId"] for e in net.event_args(receipt, "TaskPending")]
    receipt = via(net, rejecter, net.task, "cancelTask", [task_id])
    # The fee less the queue's rent, when a second passed between the creation and the cancel.
    refund = ETHER - sum(e["amount"] for e in net.event_args(receipt, "QueueRentPaid"))
    assert net.event_args(receipt, "PaymentDeferred") == [{"to": rejecter.address, "amount": refund}]
    assert net.task.functions.credits(rejecter.address).call() == refund
    assert net.task.functions.totalCredits().call() == refund
    assert net.ledger.received(rejecter.address) == 0  # still held by Task (the books check it)
    with pytest.raises(ContractRevert) as refused:
        via(net, rejecter, net.task, "withdraw", [])
    assert refused.value.name == "WithdrawalFailed"
    assert refused.value.error_args == {"account": rejecter.address, "amount": refund}
    net.tx(rejecter.functions.setAccepting(True), net.accounts[2])
    receipt = via(net, rejecter, net.task, "withdraw", [])
    assert net.event_args(receipt, "CreditWithdrawn") == [{"to": rejecter.address, "amount": refund}]
    assert net.ledger.received(rejecter.address) == refund
    assert net.reverts(net.task.functions.withdraw(), net.accounts[2]).name == "NothingToWithdraw"


def test_refused_stake_refund_is_credited_by_node(net: Net, rejecter: Contract):
    via(net, rejecter, net.node, "join", list(GPU_A), STAKE)
    receipt = via(net, rejecter, net.node, "quit", [])
    assert net.event_args(receipt, "PaymentDeferred") == [{"to": rejecter.address, "amount": STAKE}]
    assert net.node.functions.credits(rejecter.address).call() == STAKE
    net.tx(rejecter.functions.setAccepting(True), net.accounts[2])
    via(net, rejecter, net.node, "withdraw", [])
    # accounts[2] paid the stake through the Rejecter, which got it back in the end.
    assert net.ledger.received(rejecter.address) == STAKE == -net.ledger.received(net.accounts[2])


def test_a_node_that_refuses_its_fee_does_not_block_the_task(net: Net, rejecter: Contract):
    via(net, rejecter, net.node, "join", list(GPU_A), STAKE)
    net.join_all(net.accounts[3:5])
    task_id, _ = net.create_task(net.accounts[1], TaskType.GPT, ETHER)
    selected = net.selected(task_id)
    receipts = []
    for r, node in enumerate(selected):
        if node == rejecter.address:
            receipts.append(via(net, rejecter, net.task, "reportTaskError", [task_id, r]))
        else:
            receipts.append(net.report_error(task_id, r))
    paid = {e["node"]: e["fee"] for r in receipts for e in net.event_args(r, "TaskNodeSuccess")}
    deferred = [e for r in receipts for e in net.event_args(r, "PaymentDeferred")]
    assert deferred == [{"to": rejecter.address, "amount": paid[rejecter.address]}]
    assert [net.status(n) for n in selected] == [NodeStatus.AVAILABLE] * 3
    assert sum(paid.values()) == ETHER
    assert net.task.functions.credits(rejecter.address).call() == paid[rejecter.address]
