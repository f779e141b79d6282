"""The relay against a real anvil with the real contracts: the whole data path, refusals, a restart."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cluster.chain.contracts import TaskType
from cluster.protocol.hashes import task_hash
from cluster.protocol.signing import bound_params, sign_request
from cluster.relay import RelayClient, RelayRefused
from network.relay.background import RunningRelay
from tests.relay.on_chain import (
    ARGS,
    ARGS_CAP,
    CREATOR,
    NODES,
    OUTSIDER,
    RESPONSE,
    by_address,
    create_gpt_task,
    eventually,
    network_as_contract_sees_it,
    network_as_relay_sees_it,
    relay_config,
    succeed,
)  # fmt: skip
from tests.relay.on_chain import client as client_at


@pytest.fixture
def relay(anvil, deployment, tmp_path, database_url):
    """A relay on SQLite, then on PostgreSQL: each test of this file runs on both."""
    with RunningRelay(relay_config(anvil, deployment, tmp_path, database_url)) as running:
        yield running


def client(relay: RunningRelay, account) -> RelayClient:
    return client_at(relay.url, account)


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


def test_arguments_asking_for_more_than_the_cap_on_chain_are_refused(net, relay):
    """A task priced for 16 tokens (cap, its place in the queue) cannot ask for 17."""
    greedy = json.dumps({**json.loads(ARGS), "generation_config": {"max_new_tokens": 17}})
    task_id = create_gpt_task(net, greedy, cap=16)
    store = relay.service.store
    eventually(lambda: store.get(task_id))
    assert store.get(task_id).cap == 16

    async def refused() -> RelayRefused:
        async with client(relay, CREATOR) as c:
            with pytest.raises(RelayRefused) as err:
                await c.upload_args(task_id, greedy)
            return err.value

    err = asyncio.run(refused())
    assert err.status == 400 and "max_new_tokens is 17, above the task's cap of 16" in err.message
    assert not store.get(task_id).args_uploaded


def test_upload_before_success_is_answered_not_yet(net, relay):
    task_id = create_gpt_task(net)
    eventually(lambda: relay.service.store.get(task_id))
    path = f"/v1/inference_tasks/{task_id}/results"
    timestamp_signed = sign_request(
        bound_params("POST", path, {"task_id": task_id}, [RESPONSE]), NODES[0].key
    )
    response = httpx.post(
        f"{relay.url}{path}",
        data={"timestamp": str(timestamp_signed[0]), "signature": timestamp_signed[1]},
        files=[("files", ("0", RESPONSE, "application/octet-stream"))],
    )
    assert response.status_code == 409 and "no validated result" in response.json()["message"]


def test_a_restart_loses_nothing_and_resumes_following_the_chain(
    net, anvil, deployment, tmp_path, database_url
):
    config = relay_config(anvil, deployment, tmp_path, database_url)
    with RunningRelay(config) as first:
        task_id = create_gpt_task(net)
        eventually(lambda: first.service.store.get(task_id))
        asyncio.run(client(first, CREATOR).upload_args(task_id, ARGS))
    # while the relay is down, the task succeeds and another task is created
    result_node = succeed(net, task_id)
    second_id, _ = net.create_task(CREATOR.address, TaskType.GPT, task_hash=task_hash(ARGS), cap=ARGS_CAP)
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
    task_id = create_gpt_task(net)
    queued = [net.create_task(CREATOR.address, TaskType.GPT, task_hash=task_hash(ARGS), cap=ARGS_CAP)[0]]
    net.cancel(queued[0], CREATOR.address)
    net.join(OUTSIDER.address)
    expected = network_as_contract_sees_it(net)
    assert expected["nodes"] == [4, 1, 3, 0] and expected["tasks"] == [2, 0, 1, 0, 1]
    assert network_as_relay_sees_it(relay.url, net.w3.eth.block_number) == expected

    result_node = succeed(net, task_id)
    net.upload(task_id, net.selected(task_id).index(result_node), result_node)  # succeeded, nodes free
    expected = network_as_contract_sees_it(net)
    assert expected["tasks"][3] == 1
    assert network_as_relay_sees_it(relay.url, net.w3.eth.block_number) == expected

    page = httpx.get(f"{relay.url}/v1/network/nodes", params={"offset": 1, "limit": 2}).json()["data"]
    assert page["total"] == 4 and [n["address"] for n in page["nodes"]] == [
        r[0] for r in expected["known"][1:3]
    ]
    assert httpx.get(f"{relay.url}/v1/network/nodes", params={"limit": 0}).status_code == 400
