"""The application client's sampled validation (issue 28) against a real anvil, the real contracts and the
real relay: the fee and the stake bound as the contract computes them, a sampled task created through
createTaskWithValidation and its outcome once its node (driven here by the contracts harness) discloses
unaudited, and an audit that catches the first node. The draw is chosen, not waited for: a commitment
whose draw is not the one a test needs is undone (an anvil snapshot) and sent again with a fresh nonce.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.chain.contracts import TaskType, Validation
from network.app import ApplicationClient, AuditTerms, ClientSettings, PricePolicy, SampledFeeTooHigh
from tests.app.nodes import GPT_ARGS
from tests.contracts.net import ETHER, Net

N = 10
R_RIGHT, R_WRONG = b"\x11" * 32, b"\x22" * 32
FAST = {"poll_interval_s": 0.05, "relay_backoff_s": 0.05, "relay_max_backoff_s": 0.2, "relay_wait_s": 20.0}


@pytest.fixture
def make_client(anvil, deployment, relay, tmp_path, app):
    def make(state: str = "app") -> ApplicationClient:
        settings = ClientSettings(**FAST)
        return ApplicationClient(
            anvil.rpc_url, deployment, relay.url, app, tmp_path / state, settings=settings
        )

    return make


@pytest.fixture
def sampled(net: Net, nodes) -> Net:
    """Three nodes of one card model (a GPT trio: one runs the task, two audit it), N = 10."""
    nodes.join()
    net.set_audit_rate(N, pool=ETHER)
    return net


def terms_of(net: Net) -> AuditTerms:
    return AuditTerms(N, net.view(net.task, "AUDIT_MARGIN_BPS"), net.node_stake())


def commit_drawn(net: Net, task_id: int, result: bytes, *, audited: bool) -> None:
    """The task's node commits ``result``, and the draw (readable two blocks later) says ``audited``."""
    w3 = net.w3
    if audited:
        net.commit(task_id, 0, result)
        w3.provider.make_request("anvil_mine", [hex(260)])  # blockhash(c + 1) reads 0: audited
        assert net.audit_draw(task_id) == (True, True)
        return
    for _ in range(40):
        snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
        net.commit(task_id, 0, result)
        w3.provider.make_request("anvil_mine", [hex(2)])
        if net.audit_draw(task_id) == (True, False):
            return
        w3.provider.make_request("evm_revert", [snapshot])  # drawn audited (1 in N): commit again
    raise AssertionError("no unaudited draw in 40 commitments")


def test_the_sampled_fee_and_the_stake_bound_are_the_contracts(sampled, make_client):
    net = sampled
    terms = terms_of(net)
    # p (1 + 2 (1 + m) / N) = 1.22 p at N = 10; the contract's run pay of it is p (rounded up, never less).
    assert terms.sampled_fee(10**18) == 122 * 10**16 and terms.run_pay(122 * 10**16) == 10**18
    assert terms.max_run_pay_wei == net.node_stake() // (2 * N)
    # The largest fee whose run pay the contract accepts, found with the client's arithmetic.
    fee = terms.sampled_fee(terms.max_run_pay_wei)
    while terms.run_pay(fee + 1) <= terms.max_run_pay_wei:
        fee += 1
    while terms.run_pay(fee) > terms.max_run_pay_wei:
        fee -= 1
    refused = net.task.functions.createTaskWithValidation(
        int(TaskType.GPT), b"\1" * 32, b"\0" * 32, 0, 1, int(Validation.SAMPLED)
    )
    err = net.reverts(refused, net.accounts[5], fee + 1)
    assert err.name == "SampledFeeTooHigh" and err.error_args["maxRunPay"] == terms.max_run_pay_wei

    async def main() -> tuple[SampledFeeTooHigh, Any, int, int, int]:
        async with make_client() as app:
            next_id = await app.task.functions.nextTaskId().call()
            with pytest.raises(SampledFeeTooHigh) as too_high:  # refused before anything is signed
                await app.submit_request(
                    TaskType.GPT, GPT_ARGS, fee_wei=fee + 1, validation=Validation.SAMPLED
                )
            assert await app.task.functions.nextTaskId().call() == next_id
            quoted = await app.quote(TaskType.GPT, GPT_ARGS, validation=Validation.SAMPLED)
            full = await app.quote(TaskType.GPT, GPT_ARGS)
            estimated = await app.estimated_ms(TaskType.GPT, 256)
            at_edge = await app.submit_request(
                TaskType.GPT, GPT_ARGS, fee_wei=fee, validation=Validation.SAMPLED
            )
            return too_high.value, at_edge, quoted, full, estimated

    too_high, at_edge, quoted, full, estimated = asyncio.run(main())
    assert "Full validation" in str(too_high) and too_high.max_run_pay_wei == terms.max_run_pay_wei
    assert at_edge.is_sampled and at_edge.fee_wei == fee and at_edge.audit_rate == N
    # The default fee: the Full fee is three runs at PricePolicy's rate; a sampled one pays one run and
    # the premium, 1.22/3 of it at N = 10.
    assert full == PricePolicy().fee_for(estimated)
    assert quoted == terms.sampled_fee(-(-full // 3)) and quoted < full * 41 // 100


def test_a_sampled_task_ends_at_its_nodes_unaudited_disclosure(sampled, make_client):
    net = sampled

    async def submit() -> Any:
        async with make_client() as app:
            return await app.submit_request(TaskType.GPT, GPT_ARGS, validation=Validation.SAMPLED)

    submission = asyncio.run(submit())
    task_id = submission.task_id
    assert submission.is_sampled and submission.audit_rate == N
    (node, *audit_seats) = net.selected(task_id)
    assert audit_seats == [net.w3.to_checksum_address("0x" + "0" * 40)] * 2  # one node until an audit
    commit_drawn(net, task_id, R_RIGHT, audited=False)
    net.disclose(task_id, 0)  # draws, pays the node, ends the task: no upload report on this path

    async def follow() -> Any:
        async with make_client() as app:  # a restarted client: the request's record says where to read
            return await app.wait(task_id, until_uploaded=True, timeout_s=30)

    outcome = asyncio.run(follow())
    terms = terms_of(net)
    assert outcome.succeeded and outcome.result == R_RIGHT and outcome.result_node == node
    assert outcome.validation == Validation.SAMPLED and outcome.audit_rate == N and outcome.sampled
    assert outcome.audited is False and not outcome.first_node_caught and outcome.results_uploaded
    assert outcome.selected_nodes == (node,) and outcome.refund_wei == 0
    assert outcome.paid_to_nodes_wei == terms.run_pay(submission.fee_wei)


def test_an_audit_that_catches_the_first_node_shows_as_a_refund(sampled, make_client):
    net = sampled

    async def submit() -> Any:
        async with make_client() as app:
            return await app.submit_request(
                TaskType.GPT, GPT_ARGS, validation=Validation.SAMPLED_RESULT_AFTER_AUDIT
            )

    submission = asyncio.run(submit())
    task_id = submission.task_id
    first = net.selected(task_id)[0]
    commit_drawn(net, task_id, R_WRONG, audited=True)
    net.tx(net.task.functions.startAudit(task_id), net.owner)
    net.commit(task_id, 1, R_RIGHT)
    net.commit(task_id, 2, R_RIGHT)
    receipts = [net.disclose(task_id, r) for r in (0, 1, 2)]
    (success,) = [a for r in receipts for a in net.event_args(r, "TaskSuccess")]
    result_node = success["resultNode"]
    net.upload(task_id, net.selected(task_id).index(result_node), result_node)

    async def follow() -> Any:
        async with make_client() as app:
            return await app.wait(task_id, until_uploaded=True, timeout_s=30)

    outcome = asyncio.run(follow())
    assert outcome.validation == Validation.SAMPLED_RESULT_AFTER_AUDIT and outcome.audited is True
    assert outcome.succeeded and outcome.result == R_RIGHT and outcome.result_node != first
    assert outcome.first_node_caught and outcome.refund_wei == submission.fee_wei  # the whole fee back
    assert len(outcome.selected_nodes) == 3 and outcome.selected_nodes[0] == first


def test_a_requests_db_from_before_validation_reads_as_full(tmp_path):
    import sqlite3

    from network.app.submissions import SubmissionStore

    old = sqlite3.connect(tmp_path / "requests.db")
    old.execute(
        "CREATE TABLE requests (request_id TEXT PRIMARY KEY, task_type INTEGER NOT NULL, task_hash TEXT NOT"
        " NULL, task_args TEXT NOT NULL, fee_wei TEXT NOT NULL, vram_limit INTEGER NOT NULL, cap INTEGER NOT"
        " NULL, state TEXT NOT NULL, task_id INTEGER, block_number INTEGER, tx_hash TEXT, updated_at REAL"
        " NOT NULL)"
    )
    old.execute(
        "INSERT INTO requests VALUES ('r1', 1, ?, '{}', '5', 0, 1, 'created', 7, 9, '0xab', 1.0)",
        ("00" * 32,),
    )
    old.commit()
    old.close()
    store = SubmissionStore(tmp_path / "requests.db")
    record = store.get("r1")
    assert record is not None and record.task_id == 7 and record.fee_wei == 5 and record.tx_hash == "0xab"
    assert record.validation == Validation.FULL and record.audit_rate == 1 and not record.is_sampled
    store.close()
