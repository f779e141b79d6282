"""Two relay processes on one database and one file store: one follows the chain at a time, a standby
takes over when it dies, and either answers any request. On PostgreSQL (the deployment the docs show) and
on SQLite (replicas on one machine)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cluster.chain.contracts import TaskType
from cluster.protocol.hashes import task_hash
from cluster.relay import RelayRefused
from network.relay.process import RelayProcess
from network.relay.store import RelayStore
from tests.relay.on_chain import (
    ARGS,
    ARGS_CAP,
    CREATOR,
    NODES,
    OUTSIDER,
    RESPONSE,
    by_address,
    client,
    create_gpt_task,
    eventually,
    network_as_contract_sees_it,
    network_as_relay_sees_it,
    succeed,
)  # fmt: skip


@pytest.fixture
def replica(anvil, deployment, tmp_path, database_url):
    """Starts replicas sharing ``tmp_path`` (files, and the SQLite file) and the database; stops them all."""
    started: list[RelayProcess] = []

    def start(name: str) -> RelayProcess:
        process = RelayProcess(
            rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path,
            node_address=deployment.address("Node"), database_url=database_url,
            start_block=deployment.block_number, poll_interval_s=0.1, log_name=f"{name}.log",
        )  # fmt: skip
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


def caught_up(replica: RelayProcess, head: int) -> bool:
    next_block = replica.status()["next_block"]
    return next_block is not None and next_block > head


def create_tasks(net, count: int) -> list[int]:
    return [
        net.create_task(CREATOR.address, TaskType.GPT, task_hash=task_hash(ARGS), cap=ARGS_CAP)[0]
        for _ in range(count)
    ]


def test_a_standby_takes_over_when_the_follower_is_killed_and_misses_nothing(
    net, replica, database_url, tmp_path
):
    first = replica("first")
    eventually(lambda: first.status()["following"])
    second = replica("second")
    assert not second.status()["following"]  # the lease is held: it serves requests only

    create_gpt_task(net)  # three nodes join, one task runs
    queued = create_tasks(net, 3)
    eventually(lambda: caught_up(second, net.w3.eth.block_number))  # the follower's work, seen by the standby
    more = create_tasks(net, 2)
    first.kill()  # SIGKILL while following: no clean-up, the lease goes with its connection or process
    killed_at = time.monotonic()
    net.cancel(queued[0], CREATOR.address)
    net.join(OUTSIDER.address)
    more += create_tasks(net, 2)

    eventually(lambda: second.status()["following"])
    took_over_s = time.monotonic() - killed_at
    assert took_over_s < 30, f"the standby took {took_over_s:.1f} s to take over"
    head = net.w3.eth.block_number
    # every Task and Node event once: the counters equal the contract's, and every task is known
    assert network_as_relay_sees_it(second.url, head) == network_as_contract_sees_it(net)
    store = RelayStore(database_url or f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        assert all(store.get(task_id) is not None for task_id in queued + more)
    finally:
        store.close()

    restarted = replica("restarted")  # back as a standby: still one follower
    assert not restarted.status()["following"] and second.status()["following"]


def test_either_replica_answers_and_racing_uploads_store_one_copy(net, replica, tmp_path):
    a, b = replica("a"), replica("b")
    task_id = create_gpt_task(net)
    eventually(lambda: caught_up(b, net.w3.eth.block_number))

    async def data_path() -> tuple[list[str], list[int | str], list[bytes]]:
        async with client(a.url, CREATOR) as creator:
            await creator.upload_args(task_id, ARGS)  # up through one replica ...
        downloads = []
        for node, relay in zip(NODES, (b, a, b), strict=True):  # ... down through either
            async with client(relay.url, node) as node_client:
                downloads.append(await node_client.get_args(task_id))
        result_node = by_address(succeed(net, task_id))
        head = net.w3.eth.block_number
        await asyncio.to_thread(eventually, lambda: caught_up(a, head))

        async def upload(relay: RelayProcess) -> int | str:
            async with client(relay.url, result_node) as node_client:
                try:
                    await node_client.upload_results(task_id, [RESPONSE])
                except RelayRefused as refused:
                    return refused.status
                return "ok"

        outcomes = await asyncio.gather(*(upload(relay) for relay in (a, b) * 6))
        results = []
        for relay in (a, b):
            async with client(relay.url, CREATOR) as creator:
                results.append(await creator.get_result(task_id, 0))
        return downloads, outcomes, results

    downloads, outcomes, results = asyncio.run(data_path())
    assert downloads == [ARGS] * 3
    assert set(outcomes) <= {"ok", 409} and "ok" in outcomes  # each a success or one clear conflict
    assert results == [RESPONSE, RESPONSE]
    task_dir = Path(tmp_path) / "files" / str(task_id)
    assert sorted(p.name for p in task_dir.iterdir()) == ["args.json", "results"]  # no staging left over
    assert [p.name for p in (task_dir / "results").iterdir()] == ["0"]  # one copy
