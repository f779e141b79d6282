"""The relay against a real anvil with the real contracts: the whole data path, refusals, a restart."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account import Account

from cluster.chain.anvil import DEV_MNEMONIC
from cluster.chain.contracts import TaskType
from cluster.protocol.hashes import task_hash
from cluster.relay import RelayClient, RelayRefused
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig

Account.enable_unaudited_hdwallet_features()
DEV = [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(12)]
CREATOR, NODES, OUTSIDER = DEV[10], DEV[1:4], DEV[11]
ARGS = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "seed": 3}'
RESPONSE = b'{"model": "tiny", "choices": [], "usage": {}}'


def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def relay_config(anvil, deployment, data_dir) -> RelayConfig:
    return RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=data_dir, port=0,
        network_stats_address=deployment.address("NetworkStats"), start_block=deployment.block_number,
        poll_interval_s=0.05,
    )  # fmt: skip


@pytest.fixture
def relay(anvil, deployment, tmp_path):
    with RunningRelay(relay_config(anvil, deployment, tmp_path)) as running:
        yield running


def client(relay: RunningRelay, account) -> RelayClient:
    return RelayClient(relay.url, account, backoff_s=0.05, max_backoff_s=0.2)


def create_gpt_task(net, args: str = ARGS) -> int:
    net.join_all([n.address for n in NODES])
    task_id, _ = net.create_task(CREATOR.address, TaskType.GPT, task_hash=task_hash(args), cap=16)
    return task_id


def succeed(net, task_id: int) -> str:
    """All three nodes commit and disclose the same result; returns the result node."""
    result = hashlib.sha256(RESPONSE).digest()
    receipts = net.run(task_id, [result] * 3)
    (success,) = [a for r in receipts for a in net.event_args(r, "TaskSuccess")]
    return success["resultNode"]


def by_address(address: str):
    return next(a for a in DEV if a.address == address)


def test_the_whole_data_path_of_a_task(net, relay):
    task_id = create_gpt_task(net)
    eventually(lambda: relay.service.store.get(task_id))
    selected = net.selected(task_id)
    assert sorted(selected) == sorted(n.address for n in NODES)

    async def before_success() -> list[str]:
        async with client(relay, CREATOR) as creator:
            await creator.upload_args(task_id, ARGS)
        downloads = []
        for node in selected:
            async with client(relay, by_address(node)) as node_client:
                downloads.append(await node_client.get_args(task_id))
        return downloads

    assert asyncio.run(before_success()) == [ARGS] * 3
    result_node = succeed(net, task_id)

    async def after_success() -> bytes:
        async with client(relay, by_address(result_node)) as node_client:
            await node_client.upload_results(task_id, [RESPONSE])
        async with client(relay, CREATOR) as creator:
            return await creator.get_result(task_id, 0)

    assert asyncio.run(after_success()) == RESPONSE
    net.upload(task_id, selected.index(result_node), result_node)


def test_refusals_against_the_chain_change_nothing(net, relay):
    task_id = create_gpt_task(net)
    store = relay.service.store
    eventually(lambda: store.get(task_id))

    async def refused(account, call: str, *args) -> RelayRefused:
        async with client(relay, account) as c:
            with pytest.raises(RelayRefused) as err:
                await getattr(c, call)(*args, wait_s=5)
            return err.value

    assert "taskHash" in asyncio.run(refused(CREATOR, "upload_args", task_id, ARGS + " ")).message
    assert asyncio.run(refused(NODES[0], "upload_args", task_id, ARGS)).status == 403
    asyncio.run(client(relay, CREATOR).upload_args(task_id, ARGS))
    assert asyncio.run(refused(OUTSIDER, "get_args", task_id)).status == 403

    result_node = succeed(net, task_id)
    eventually(lambda: store.get(task_id).result_node)
    others = [n for n in NODES if n.address != result_node]
    assert asyncio.run(refused(others[0], "upload_results", task_id, [RESPONSE])).status == 403
    assert asyncio.run(refused(by_address(result_node), "upload_results", task_id, [b"other"])).status == 400
    assert asyncio.run(refused(by_address(result_node), "get_result", task_id, 0)).status == 403
    assert store.get(task_id).num_result_files == 0


def test_upload_before_success_is_answered_not_yet(net, relay):
    task_id = create_gpt_task(net)
    eventually(lambda: relay.service.store.get(task_id))
    timestamp_signed = RelayClient(relay.url, NODES[0])._sign({"task_id": task_id})
    response = httpx.post(
        f"{relay.url}/v1/inference_tasks/{task_id}/results",
        data={"timestamp": str(timestamp_signed[0]), "signature": timestamp_signed[1]},
        files=[("files", ("0", RESPONSE, "application/octet-stream"))],
    )
    assert response.status_code == 409 and "no validated result" in response.json()["message"]


def test_a_restart_loses_nothing_and_resumes_following_the_chain(net, anvil, deployment, tmp_path):
    config = relay_config(anvil, deployment, tmp_path)
    with RunningRelay(config) as first:
        task_id = create_gpt_task(net)
        eventually(lambda: first.service.store.get(task_id))
        asyncio.run(client(first, CREATOR).upload_args(task_id, ARGS))
    # while the relay is down, the task succeeds and another task is created
    result_node = succeed(net, task_id)
    second_id, _ = net.create_task(CREATOR.address, TaskType.GPT, task_hash=task_hash(ARGS), cap=16)
    with RunningRelay(config) as second:
        store = second.service.store
        eventually(lambda: store.get(second_id) and store.get(task_id).result_node)
        assert store.get(task_id).result_node == result_node

        async def check() -> tuple[str, bytes]:
            async with client(second, by_address(result_node)) as node_client:
                args = await node_client.get_args(task_id)  # uploaded before the restart
                await node_client.upload_results(task_id, [RESPONSE])
            async with client(second, CREATOR) as creator:
                return args, await creator.get_result(task_id, 0)

        assert asyncio.run(check()) == (ARGS, RESPONSE)
        assert store.get_cursor("task-events") == net.w3.eth.block_number + 1


def test_network_statistics_come_from_the_chain(net, relay):
    create_gpt_task(net)
    counters = httpx.get(f"{relay.url}/v1/network").json()["data"]
    assert counters["nodes"]["total"] == 3 and counters["nodes"]["busy"] == 3
    assert counters["tasks"]["running"] == 1
    page = httpx.get(f"{relay.url}/v1/network/nodes", params={"offset": 1, "limit": 5}).json()["data"]
    assert page["total"] == 3 and len(page["nodes"]) == 2
    assert page["nodes"][0]["status"] == "busy" and page["nodes"][0]["gpu_vram_gb"] == 24
    assert httpx.get(f"{relay.url}/v1/network/nodes", params={"limit": 0}).status_code == 400
