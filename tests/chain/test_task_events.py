"""The typed Task events against a real chain: a task's whole life decoded once, for every consumer."""

from __future__ import annotations

import asyncio
import re

from cluster.chain.artifacts import REPO_ROOT, load_artifact
from cluster.chain.contracts import AbortReason, TaskType, Validation
from cluster.chain.events import EventDecoder, LogPager
from cluster.chain.rpc import RpcClient, connect
from cluster.chain.task_events import _BUILDERS as TYPED_EVENT_NAMES
from cluster.chain.task_events import (
    AuditDrawn,
    AuditStarted,
    CommitmentsReady,
    CommitmentSubmitted,
    FeeRefunded,
    NodeOutcome,
    ResultDisclosed,
    ResultUploaded,
    TaskAborted,
    TaskNodeSettled,
    TaskPending,
    TaskSampled,
    TaskStarted,
    TaskSuccess,
    task_events,
)
from cluster.protocol.hashes import commitment
from tests.contracts.net import ETHER, Net

# Events of the Task contract that no consumer follows a task by: the owner's settings, the wiring, and the
# delivery of payouts (a credit deferred for an address that refused a transfer, and its withdrawal).
NOT_ABOUT_A_TASK = {"Wired", "OwnershipTransferred", "TaskTimeoutSet", "DistanceThresholdSet"} | {
    "PaymentDeferred",
    "CreditWithdrawn",
    "MinTaskFeeSet",
    "ArgumentsWaitSet",
    "ResponseWindowSet",
    "QueueRentSet",
    "RelaySignerSet",
    "AuditRateSet",
    "AuditPoolFunded",
    "AuditPoolWithdrawn",
}


def read_task_events(anvil, deployment, first: int):
    async def read():
        w3 = connect(anvil.rpc_url)
        try:
            decoder = EventDecoder({"Task": (deployment.address("Task"), load_artifact("Task").abi)})
            rpc = RpcClient(w3)
            head = int(await rpc.call("eth_blockNumber", []), 16)
            return task_events(await LogPager(rpc, decoder, page_blocks=3).all(first, head))
        finally:
            await w3.provider.disconnect()

    return asyncio.run(read())


def test_a_task_s_life_decodes_to_typed_events(w3, anvil, deployment):
    net = Net(w3, deployment)
    app, nodes = net.accounts[20], net.accounts[21:24]
    net.join_all(nodes)
    first = w3.eth.block_number + 1
    task_id, _ = net.create_task(app, TaskType.GPT, fee=ETHER, cap=6)
    result = b"\x01" * 32
    net.run(task_id, [result] * 3)
    success = next(e for e in read_task_events(anvil, deployment, first) if isinstance(e, TaskSuccess))
    selected = net.selected(task_id)
    net.upload(task_id, selected.index(success.result_node), success.result_node)
    events = [e for e in read_task_events(anvil, deployment, first) if e.task_id == task_id]

    pending, *started = events[:4]
    assert isinstance(pending, TaskPending) and pending.creator == app and pending.fee_wei == ETHER
    assert pending.task_type is TaskType.GPT and pending.cap == 6 and pending.vram_limit == 0
    assert all(isinstance(e, TaskStarted) for e in started)
    assert sorted(e.round for e in started) == [0, 1, 2] and {e.node for e in started} <= set(nodes)
    assert all(e.task_hash == pending.task_hash and e.creator == app for e in started)
    names = [e.name for e in events]
    assert names.count("TaskResultCommitmentSubmitted") == 3 and names.count("TaskNodeSuccess") == 3
    assert sum(isinstance(e, CommitmentSubmitted) for e in events) == 3
    assert sum(isinstance(e, CommitmentsReady) for e in events) == 1
    assert [e.result for e in events if isinstance(e, ResultDisclosed)] == [result] * 3
    assert success.result == result and success.result_node in nodes
    settled = [e for e in events if isinstance(e, TaskNodeSettled)]
    assert {e.outcome for e in settled} == {NodeOutcome.PAID} and sum(e.fee_wei for e in settled) == ETHER
    assert sum(isinstance(e, ResultUploaded) for e in events) == 1
    assert [e.position for e in events] == sorted(e.position for e in events)
    assert all(e.raw.args["taskId"] == task_id for e in events)  # the source stays at hand


def test_a_cancelled_task_decodes_its_abort_and_refund(w3, anvil, deployment):
    net = Net(w3, deployment)
    app = net.accounts[20]
    first = w3.eth.block_number + 1
    net.join_paused(net.accounts[3:6])  # nodes that could run it, paused: it waits in the queue
    task_id, _ = net.create_task(app, TaskType.SD, fee=ETHER)
    net.cancel(task_id, app)
    events = [e for e in read_task_events(anvil, deployment, first) if e.task_id == task_id]
    aborted = [e for e in events if isinstance(e, TaskAborted)]
    assert [a.reason for a in aborted] == [AbortReason.CANCELLED] and aborted[0].is_cancel
    refunds = [e for e in events if isinstance(e, FeeRefunded)]
    assert [(r.creator, r.amount_wei) for r in refunds] == [(app, ETHER)]


def test_a_sampled_task_s_audit_decodes_its_draw_and_auditors(w3, anvil, deployment):
    net = Net(w3, deployment)
    app, nodes = net.accounts[20], net.accounts[21:24]
    net.join_all(nodes)
    net.set_audit_rate(10, pool=5 * ETHER)
    first = w3.eth.block_number + 1
    task_id, _ = net.create_task_with_validation(app, Validation.SAMPLED_RESULT_AFTER_AUDIT, fee=ETHER // 10)
    result = b"\x02" * 32
    net.commit(task_id, 0, result, nonce=b"\x07" * 32)
    w3.provider.make_request("anvil_mine", [hex(260)])  # blockhash(c + 1) reads zero: the draw audits
    net.tx(net.task.functions.startAudit(task_id), app)
    events = [e for e in read_task_events(anvil, deployment, first) if e.task_id == task_id]

    pending, sampled, started0 = events[:3]
    assert isinstance(pending, TaskPending) and isinstance(started0, TaskStarted) and started0.round == 0
    assert isinstance(sampled, TaskSampled) and (sampled.audit_rate, sampled.result_after_audit) == (10, True)
    [committed] = [e for e in events if isinstance(e, CommitmentSubmitted)]
    assert committed.commitment == commitment(result, b"\x07" * 32, started0.node)
    [drawn] = [e for e in events if isinstance(e, AuditDrawn)]
    [audit] = [e for e in events if isinstance(e, AuditStarted)]
    assert drawn.is_audited and audit.first_node == started0.node
    auditors = [e for e in events if isinstance(e, TaskStarted) and e.round > 0]
    assert [e.round for e in auditors] == [1, 2] and tuple(e.node for e in auditors) == audit.auditors
    assert all(e.task_hash == bytes(32) for e in auditors)  # the task's hash is TaskPending's
    assert started0.node not in audit.auditors and set(audit.auditors) <= set(nodes)


def test_every_task_event_of_the_abi_is_typed_or_deliberately_left_out():
    events = {item["name"] for item in load_artifact("Task").abi if item["type"] == "event"}
    typed = {name for name in events if name not in NOT_ABOUT_A_TASK}
    assert typed == set(TYPED_EVENT_NAMES)


def test_abort_reasons_mirror_the_contract_s_constants():
    files = ("TaskCore.sol", "TaskArguments.sol")
    source = "".join((REPO_ROOT / "contracts/src" / f).read_text() for f in files)
    constants = dict(re.findall(r'string public constant REASON_(\w+) = "([^"]+)";', source))
    assert {reason.name: reason.value for reason in AbortReason} == constants
