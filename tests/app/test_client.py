"""ApplicationClient against a real anvil, the real contracts and the real relay; the nodes are simulated."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from cluster.chain.contracts import AbortReason, TaskType
from cluster.chain.sender import SenderConfig, TxTimeout
from cluster.protocol import ArgumentsInvalid
from cluster.protocol.phash import sd_result
from network.app import (
    ApplicationClient,
    ArgumentsNotDelivered,
    ClientSettings,
    ContractRejected,
    PricePolicy,
    RequestConflict,
    ResultMismatch,
    TaskAbortedError,
    fee_to_outbid,
)
from tests.app.conftest import APP
from tests.app.nodes import GPT_ARGS, GPT_RESPONSE, NODE_ACCOUNTS, SD_ARGS, gpt_result, png

FAST = {"poll_interval_s": 0.05, "relay_backoff_s": 0.05, "relay_max_backoff_s": 0.2, "relay_wait_s": 20.0}


@pytest.fixture
def make_client(anvil, deployment, relay, tmp_path, app):
    def make(
        state: str = "app", *, http: httpx.AsyncClient | None = None, **settings: Any
    ) -> ApplicationClient:
        return ApplicationClient(
            anvil.rpc_url, deployment, relay.url, app, tmp_path / state,
            settings=ClientSettings(**(FAST | settings)), relay_http=http,
        )  # fmt: skip

    return make


def spent(net, before: int) -> int:
    """What the application paid since ``before`` besides gas (the ledger knows gas only at teardown)."""
    return before - net.w3.eth.get_balance(APP.address)


def test_gpt_task_from_submit_to_verified_result(net, nodes, make_client):
    nodes.join()
    task_id = nodes.next_task_id()
    progress: list[str] = []

    async def main() -> tuple[tuple[int, list[bytes]], Any, int]:
        async with make_client() as app:
            fee = await app.quote(TaskType.GPT, GPT_ARGS)
            serving = asyncio.to_thread(
                lambda: nodes.serve(nodes.wait_for_task(task_id), [GPT_RESPONSE], gpt_result([GPT_RESPONSE]))
            )
            ran, _ = await asyncio.gather(
                app.run(TaskType.GPT, GPT_ARGS, on_progress=lambda event: progress.append(event.name)),
                serving,
            )
            return ran, await app.wait(task_id, until_uploaded=True, timeout_s=10), fee

    (created_id, files), outcome, fee = asyncio.run(main())
    assert created_id == task_id and files == [GPT_RESPONSE]
    # The default fee: PricePolicy over the chain's estimate, 10 s + 0.05 s x 256 tokens.
    assert fee == PricePolicy().fee_for(10_000 + 50 * 256) == outcome.fee_wei
    assert progress[0] == "TaskPending" and progress.count("TaskStarted") == 3 and "TaskSuccess" in progress
    assert outcome.status == "succeeded" and outcome.reason is None and outcome.results_uploaded
    assert outcome.result == gpt_result([GPT_RESPONSE]) and outcome.result_node in outcome.selected_nodes
    assert sorted(outcome.selected_nodes) == sorted(a.address for a in NODE_ACCOUNTS)
    assert outcome.paid_to_nodes_wei == fee and outcome.refund_wei == 0


def test_sd_task_returns_the_images_whose_phashes_are_the_result(net, nodes, make_client):
    nodes.join()
    images = [png(1), png(2)]

    async def main() -> list[bytes]:
        async with make_client() as app:
            task_id = await app.submit(TaskType.SD, SD_ARGS, fee_wei=10**18)
            await asyncio.to_thread(nodes.serve, task_id, images, sd_result(images))
            return await app.results(task_id, timeout_s=20)

    assert asyncio.run(main()) == images


def test_invalid_arguments_are_refused_before_any_transaction(net, nodes, make_client):
    before, next_id = net.w3.eth.get_balance(APP.address), nodes.next_task_id()
    nonce = net.w3.eth.get_transaction_count(APP.address)
    bad = json.dumps({"model": "tiny-gpt", "messages": [{"role": "robot", "content": "hi"}]})

    async def main() -> ArgumentsInvalid:
        async with make_client() as app:
            with pytest.raises(ArgumentsInvalid) as err:
                await app.submit(TaskType.GPT, bad)
            assert app.pending() == []
            return err.value

    assert "messages.0.role" in asyncio.run(main()).fields
    assert net.w3.eth.get_balance(APP.address) == before and nodes.next_task_id() == next_id
    assert net.w3.eth.get_transaction_count(APP.address) == nonce


def test_three_different_results_abort_the_task_and_refund_the_fee(net, nodes, make_client):
    nodes.join()
    task_id = nodes.next_task_id()
    fee = 3 * 10**17

    def disagree() -> None:
        nodes.wait_for_task(task_id)
        nodes.fetch_args(task_id)
        assert nodes.work(task_id, [b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]) is None

    async def main() -> TaskAbortedError:
        async with make_client() as app:
            with pytest.raises(TaskAbortedError) as err:
                await asyncio.gather(
                    app.run(TaskType.GPT, GPT_ARGS, fee_wei=fee), asyncio.to_thread(disagree)
                )
            return err.value

    before = net.w3.eth.get_balance(APP.address)
    aborted = asyncio.run(main())
    assert aborted.reason == AbortReason.RESULT_ILLEGAL and aborted.refund_wei == fee
    assert spent(net, before) < 10**16  # gas only: the fee came back


def test_cancel_after_the_deadline_refunds_the_fee(net, nodes, make_client):
    nodes.join()
    fee = 2 * 10**17

    async def main() -> None:
        async with make_client() as app:
            task_id = await app.submit(TaskType.GPT, GPT_ARGS, fee_wei=fee)
            with pytest.raises(ContractRejected) as err:
                await app.cancel(task_id)
            assert err.value.name == "DeadlineNotPassed" and not err.value.revert.is_mined
            await asyncio.to_thread(net.mine_after, 15 * 60 + 1)
            assert await app.cancel(task_id) == fee
            assert await app.cancel(task_id) == fee  # idempotent: the same transaction, not a second one
            outcome = await app.wait(task_id, timeout_s=5)
            assert outcome.status == "aborted" and outcome.reason == AbortReason.CANCELLED
            assert outcome.refund_wei == fee and outcome.result is None

    asyncio.run(main())


class RelayOutage(httpx.AsyncBaseTransport):
    """The relay unreachable (connection refused) until ``until`` is set; then the real one."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.over = asyncio.Event()
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.over.is_set():
            self.refused += 1
            raise httpx.ConnectError("connection refused (a relay outage)", request=request)
        return await self.real.handle_async_request(request)


def test_the_argument_upload_outlasts_a_relay_outage_longer_than_relay_wait_s(net, nodes, make_client):
    """A 60 s relay outage used to lose a paid task: the upload gave up after relay_wait_s (60 s) while
    the task held its nodes. It now tries on to the task's deadline."""
    nodes.join()

    async def main() -> None:
        outage = RelayOutage()
        async with make_client(http=httpx.AsyncClient(transport=outage), relay_wait_s=0.2) as app:
            submitting = asyncio.create_task(app.submit(TaskType.GPT, GPT_ARGS, fee_wei=10**17))
            while outage.refused < 5 and not submitting.done():  # well past relay_wait_s, still trying
                await asyncio.sleep(0.1)
            assert not submitting.done()
            outage.over.set()
            task_id = await submitting
            assert app.pending() == []
        # the nodes read the arguments from the relay and the task succeeds
        await asyncio.to_thread(nodes.serve, task_id, [GPT_RESPONSE], gpt_result([GPT_RESPONSE]))

    asyncio.run(main())


def test_arguments_undelivered_by_the_deadline_cancel_the_task_for_its_refund(net, nodes, make_client):
    nodes.join()
    fee = 10**17
    net.tx(net.task.functions.setTaskTimeout(2), net.w3.eth.accounts[0])  # a short deadline

    async def main() -> None:
        outage = RelayOutage()  # never over
        async with make_client(http=httpx.AsyncClient(transport=outage), relay_wait_s=0.2) as app:
            with pytest.raises(ArgumentsNotDelivered) as err:
                await app.submit(TaskType.GPT, GPT_ARGS, fee_wei=fee, request_id="doomed")
            assert err.value.refund_wei == fee and "cancelled" in str(err.value)
            outcome = await app.wait(err.value.task_id, timeout_s=10)
            assert outcome.status == "aborted" and outcome.reason == AbortReason.CANCELLED
            assert app.pending() == []  # nothing left to resume after a restart
            with pytest.raises(RequestConflict):
                await app.submit(TaskType.GPT, GPT_ARGS, fee_wei=fee, request_id="doomed")

    asyncio.run(main())


def queue_rent_paid(net, task_id: int) -> int:
    """What the task paid the treasury for its time in the queue (QueueRentPaid)."""
    rents = net.task.events.QueueRentPaid().get_logs(from_block=0, argument_filters={"taskId": task_id})
    return sum(e["args"]["amount"] for e in rents)


def test_a_full_queue_rejects_a_lower_fee_and_evicts_for_a_higher_one(net, nodes, make_client):
    net.tx(net.queue.functions.setSizeLimit(1), net.owner)
    net.join_paused(net.accounts[25:28])  # nodes that could run every task, paused: each is queued

    async def main() -> None:
        async with make_client() as app:
            first = await app.submit(TaskType.GPT, GPT_ARGS, fee_wei=10**17)
            before = await app.w3.eth.get_balance(APP.address)
            with pytest.raises(ContractRejected) as err:
                await app.submit(TaskType.SD, SD_ARGS, fee_wei=10**16, request_id="sd-1")
            rejected = err.value
            assert rejected.reason == AbortReason.FEE_TOO_LOW and rejected.name == "TaskFeeTooLow"
            assert await app.w3.eth.get_balance(APP.address) == before  # refused at estimation: free
            sd_ms, gpt_ms = 20_000 + 2 * 30_000, 10_000 + 50 * 256
            assert rejected.suggested_fee_wei == fee_to_outbid(sd_ms, 10**17, gpt_ms)
            # The same request id may be retried with a better fee: nothing of it reached the chain.
            second = await app.submit(
                TaskType.SD, SD_ARGS, fee_wei=rejected.suggested_fee_wei, request_id="sd-1"
            )
            evicted = await app.wait(first, timeout_s=5)
            # refunded its fee less the queue's rent for its seconds queued (none within the second)
            assert evicted.reason == AbortReason.FEE_TOO_LOW
            assert evicted.refund_wei + queue_rent_paid(net, first) == 10**17
            assert evicted.selected_nodes == ()
            # queued: cancelled at any time, for the fee less the queue's rent for its 20 s or so queued
            net.mine_after(20)
            refund = await app.cancel(second)
            rent = queue_rent_paid(net, second)
            assert refund + rent == rejected.suggested_fee_wei
            assert 0 < rent < rejected.suggested_fee_wei // 1000  # 10% an hour: 0.06% for 20 s

    asyncio.run(main())


def test_a_restarted_client_does_not_create_the_same_request_twice(net, nodes, make_client):
    nodes.join()
    first_id = nodes.next_task_id()
    rpc = net.w3.provider.make_request

    async def crash_before_the_receipt() -> None:
        # The transaction is signed, journaled and broadcast, but not mined before the process "dies".
        rpc("evm_setAutomine", [False])
        try:
            sender = SenderConfig(receipt_timeout_s=0.3, max_fee_bumps=0)
            async with make_client(sender=sender) as app:
                with pytest.raises(TxTimeout):
                    await app.submit(TaskType.GPT, GPT_ARGS, request_id="req-7")
                assert app.pending() == ["req-7"]
        finally:
            rpc("evm_mine", [])
            rpc("evm_setAutomine", [True])

    async def restart() -> None:
        async with make_client() as app:
            assert app.pending() == ["req-7"]
            (resumed,) = await app.resume_pending()
            assert resumed.request_id == "req-7" and resumed.task_id == first_id
            assert app.pending() == []
            assert await app.submit(TaskType.GPT, GPT_ARGS, request_id="req-7") == first_id
            with pytest.raises(RequestConflict):
                await app.submit(TaskType.GPT, GPT_ARGS.replace("hi", "ho"), request_id="req-7")
            with pytest.raises(RequestConflict):
                await app.submit(TaskType.GPT, GPT_ARGS, fee_wei=1, request_id="req-7")

    asyncio.run(crash_before_the_receipt())
    asyncio.run(restart())
    assert nodes.next_task_id() == first_id + 1  # exactly one task
    assert nodes.fetch_args(first_id) == [GPT_ARGS] * 3


class TamperingTransport(httpx.AsyncBaseTransport):
    """Between the application and the relay: flips a byte of every result file it passes on."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or "/results/" not in request.url.path or response.status_code != 200:
            return response
        body = bytearray(await response.aread())
        body[-2] ^= 0x01
        return httpx.Response(200, content=bytes(body), headers={"content-type": "application/octet-stream"})

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_result_files_that_do_not_match_the_chain_are_refused(net, nodes, make_client):
    nodes.join()

    async def main() -> ResultMismatch:
        http = httpx.AsyncClient(transport=TamperingTransport())
        async with make_client(http=http) as app:
            task_id = await app.submit(TaskType.GPT, GPT_ARGS)
            await asyncio.to_thread(nodes.serve, task_id, [GPT_RESPONSE], gpt_result([GPT_RESPONSE]))
            with pytest.raises(ResultMismatch) as err:
                await app.results(task_id, timeout_s=20)
            return err.value

    assert "0.json hashes to" in str(asyncio.run(main()))


def test_price_policy_and_outbidding_follow_the_contract_arithmetic():
    policy = PricePolicy(wei_per_second=10**16)
    assert policy.fee_for(22_800) == 228 * 10**15
    assert PricePolicy(wei_per_second=1).fee_for(1) == 1  # rounded up, never zero
    fee = fee_to_outbid(80_000, 10**17, 22_800)
    assert fee * 22_800 > 10**17 * 80_000 >= (fee - 1) * 22_800
