"""The cluster's relay client against a relay served on loopback: retries "not yet", never a refusal. Each
test runs over both transports: httpx (the default, the application's) and an aiohttp session (the
coordinator's)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from eth_account import Account

from cluster.protocol.hashes import task_hash
from cluster.relay import RelayClient, RelayNotReady, RelayRefused
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig

CREATOR, NODE, STRANGER = (Account.create() for _ in range(3))
ARGS = '{"model": "m", "messages": [{"role": "user", "content": "hello"}]}'
RESPONSE = b'{"model": "m"}'


@pytest.fixture
def relay(anvil, tmp_path):
    config = RelayConfig(
        rpc_url=anvil.rpc_url,
        task_address=Account.create().address,
        data_dir=tmp_path,
        port=0,
        poll_interval_s=0.1,
    )
    with RunningRelay(config, task_abi=[]) as running:
        yield running


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request) -> str:
    return request.param


@contextlib.asynccontextmanager
async def relay_client(url: str, account, transport: str, **kwargs) -> AsyncIterator[RelayClient]:
    kwargs = {"backoff_s": 0.05, "max_backoff_s": 0.2} | kwargs
    if transport == "httpx":
        async with RelayClient(url, account, **kwargs) as client:
            yield client
        return
    async with aiohttp.ClientSession() as session:
        async with RelayClient(url, account, session=session, **kwargs) as client:
            yield client
        assert not session.closed  # the session is its owner's to close (the coordinator shares one)


def client(relay: RunningRelay, account, transport: str, **kwargs) -> contextlib.AbstractAsyncContextManager:
    return relay_client(relay.url, account, transport, **kwargs)


def test_a_node_waits_for_arguments_that_arrive_later(relay, transport):
    store = relay.service.store
    store.saw_task(1, 1, CREATOR.address, task_hash(ARGS))
    store.saw_selection(1, 0, NODE.address)

    async def scenario() -> tuple[str, float]:
        async with client(relay, NODE, transport) as node, client(relay, CREATOR, transport) as creator:
            started = time.monotonic()
            waiting = asyncio.create_task(node.get_args(1, wait_s=10))
            await asyncio.sleep(0.5)
            assert not waiting.done()  # "not uploaded yet" is retried, not raised
            await creator.upload_args(1, ARGS)
            return await waiting, time.monotonic() - started

    args, waited_s = asyncio.run(scenario())
    assert args == ARGS and waited_s >= 0.5


def test_an_upload_waits_for_the_relay_to_see_the_task(relay, transport):
    async def scenario() -> None:
        async with client(relay, CREATOR, transport) as creator:
            upload = asyncio.create_task(creator.upload_args(2, ARGS, wait_s=10))
            await asyncio.sleep(0.3)
            relay.service.store.saw_task(2, 1, CREATOR.address, task_hash(ARGS))
            await upload

    asyncio.run(scenario())
    assert relay.service.store.get(2).args_uploaded


def test_refusals_are_raised_at_once_with_the_reason(relay, transport):
    relay.service.store.saw_task(3, 1, CREATOR.address, task_hash(ARGS))

    async def scenario() -> float:
        async with client(relay, STRANGER, transport) as stranger:
            started = time.monotonic()
            with pytest.raises(RelayRefused) as refused:
                await stranger.upload_args(3, ARGS, wait_s=30)
            assert refused.value.status == 403 and "creator" in refused.value.message
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 5


def test_not_ready_after_the_wait(relay, transport):
    async def scenario() -> None:
        async with client(relay, NODE, transport) as node:
            with pytest.raises(RelayNotReady, match="not been seen"):
                await node.get_args(404, wait_s=0.5)

    asyncio.run(scenario())


def test_results_round_trip_between_result_node_and_creator(relay, transport):
    store = relay.service.store
    store.saw_task(4, 1, CREATOR.address, task_hash(ARGS))
    store.saw_selection(4, 2, NODE.address)

    async def scenario() -> bytes:
        async with client(relay, NODE, transport) as node, client(relay, CREATOR, transport) as creator:
            upload = asyncio.create_task(node.upload_results(4, [RESPONSE], wait_s=10))
            await asyncio.sleep(0.3)  # 409 "no validated result yet" until the success is seen
            store.saw_success(4, hashlib.sha256(RESPONSE).digest(), NODE.address)
            await upload
            return await creator.get_result(4, 0)

    assert asyncio.run(scenario()) == RESPONSE


def test_an_unreachable_relay_is_retried_until_the_wait_ends(transport):
    async def scenario() -> None:
        async with relay_client("http://127.0.0.1:9", NODE, transport, max_backoff_s=5.0) as node:
            # httpx's ConnectError, aiohttp's ClientConnectorError
            with pytest.raises(RelayNotReady, match=r"Connect(or)?Error"):
                await node.get_args(1, wait_s=0.4)

    asyncio.run(scenario())
