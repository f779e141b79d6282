"""Machines of a farm join, fail, drain and come back, on a Ray cluster of real raylets on this host
(tests/farm/simulated.py): the coordinator's service with its worker pool, the session's chain, a real
relay and an application paying for GPT tasks.

The farm starts with three machines of two virtual GPUs of card A: six places, six node accounts. The
tests share it (starting raylets and worker processes is most of their time) and run in this order: a
machine lost while tasks stream and one back; a machine of a new card model added; a machine drained and
taken back; and last, a rolling upgrade of card A's machines to a new runtime tag. Each but the last
leaves every account of card A serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.round_state import Outcome
from cluster.protocol.task import TaskType
from cluster.status.model import MachineView
from network.app.client import ApplicationClient
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.chain_clock import catch_up_chain_time
from tests.coordinator.factories import APP, FUNDER, endpoints, gpt_args
from tests.coordinator.scheduling.factories import gpt_job
from tests.farm.simulated import SimulatedFarm, farm_config

pytestmark = pytest.mark.timeout(600)
LONG_JOB = {"max_new_tokens": 160}  # a second or more on a CPU worker: long enough to be caught running


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cluster.workers.models.builders import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")


@pytest.fixture(scope="module")
def relay(anvil, deployment, tmp_path_factory) -> Iterator[RunningRelay]:
    config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), port=0, poll_interval_s=0.05,
        data_dir=tmp_path_factory.mktemp("relay"), start_block=deployment.block_number,
    )  # fmt: skip
    with RunningRelay(config) as running:
        yield running


@pytest.fixture(scope="module")
def farm(anvil, deployment, relay, tmp_path_factory) -> Iterator[SimulatedFarm]:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
    catch_up_chain_time(w3)
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]  # the farm's nodes leave with it
    operator, mnemonic = Account.create_with_mnemonic()
    w3.eth.send_transaction({"from": FUNDER.address, "to": operator.address, "value": 5_000 * 10**18})
    root = tmp_path_factory.mktemp("farm")
    config = farm_config(root / "state", root / "hub")
    farm = SimulatedFarm(config, endpoints(anvil.rpc_url, deployment, relay.url), mnemonic)
    farm.start_ray()
    try:
        for _ in range(3):
            farm.add_machine(a=2)
        farm.start_service()
        yield farm
    finally:
        farm.close()
        w3.provider.make_request("evm_revert", [snapshot])


def statuses(farm: SimulatedFarm) -> dict[str, NodeStatus]:
    coordinator = farm.service.coordinator

    async def read() -> dict[str, NodeStatus]:
        return {n.address: await coordinator.ops.node_status(n.address) for n in coordinator.accounts}

    return farm.run(read())


def num_paused(farm: SimulatedFarm) -> int:
    return sum(s in (NodeStatus.PAUSED, NodeStatus.PENDING_PAUSE) for s in statuses(farm).values())


def machine(farm: SimulatedFarm, node_id: str) -> MachineView:
    """The pool's view of a machine; an empty one until the pool has seen it join."""
    views = {view.node_id: view for view in farm.service.pool.machines()}
    unseen = MachineView(node_id=node_id, address="", state="unseen", gpus={}, num_workers=0,
                         num_alive_workers=0, num_places=0, num_running=0, since_s=0.0)  # fmt: skip
    return views.get(node_id) or unseen


def pay_for_tasks(anvil, deployment, relay, model: Path, seeds: range, state_dir: Path) -> list[list[bytes]]:
    """Run in a thread of its own: an application paying for GPT tasks at once, each until its result."""

    async def main() -> list[list[bytes]]:
        async with ApplicationClient(anvil.rpc_url, deployment, relay.url, APP, state_dir) as app:
            runs = [app.run(TaskType.GPT, gpt_args(model, seed, **LONG_JOB), request_id=f"farm-{seed}",
                            timeout_s=400) for seed in seeds]  # fmt: skip
            return [files for _, files in await asyncio.gather(*runs)]

    return asyncio.run(main())


def no_slash(farm: SimulatedFarm) -> None:
    tasks = farm.service.coordinator.status().tasks
    assert tasks.ended(Outcome.SLASHED) == 0, tasks


def test_a_machine_lost_while_tasks_stream_loses_no_task_and_its_accounts_pause_then_resume(
    farm, anvil, deployment, relay, tiny_lm, tmp_path
):
    from concurrent.futures import ThreadPoolExecutor

    pool = farm.service.pool
    victim = next(iter(farm.machines))
    with ThreadPoolExecutor(1) as app:
        paid = app.submit(pay_for_tasks, anvil, deployment, relay, tiny_lm, range(4), tmp_path / "app")
        farm.wait_for(
            lambda: machine(farm, victim).num_running > 0 or paid.done(), what="a job on the victim"
        )
        assert not paid.done(), "the tasks ended before a job ran on the machine to be lost"
        farm.kill_machine(victim)
        farm.wait_for(lambda: machine(farm, victim).state == "lost", timeout_s=60, what="the loss noticed")
        # its two places' accounts paused on chain (an idle one at once, a busy one when its task ends)
        farm.wait_for(lambda: num_paused(farm) == 2, timeout_s=60, what="two accounts paused")
        results = paid.result(timeout=400)  # every task, the one whose job ran on the lost machine too
    assert len(results) == 4 and all(files for files in results)
    no_slash(farm)
    assert sum(places for places in pool.places().values()) == 4

    back = farm.add_machine(a=2)  # the machine back (a restarted raylet is a new Ray node)
    farm.wait_for(lambda: machine(farm, back).state == "serving" and sum(pool.places().values()) == 6,
                  timeout_s=180, what="the machine's workers serving")  # fmt: skip
    farm.wait_for(lambda: num_paused(farm) == 0, timeout_s=60, what="its accounts resumed")
    assert set(statuses(farm).values()) == {NodeStatus.AVAILABLE}
    assert len(farm.service.coordinator.accounts) == 6  # the same accounts resumed: none derived


def test_a_machine_added_brings_its_new_card_model_s_accounts_without_a_restart(farm, tiny_lm):
    coordinator, pool = farm.service.coordinator, farm.service.pool
    card_b = farm.card("b")
    node_id = farm.add_machine(b=1)
    farm.wait_for(lambda: any(n.card == card_b for n in coordinator.accounts), timeout_s=180,
                  what="an account of card B")  # fmt: skip
    (account,) = coordinator.nodes.of_card(card_b)
    farm.wait_for(lambda: statuses(farm)[account.address] is NodeStatus.AVAILABLE, timeout_s=60,
                  what="card B's account available")  # fmt: skip
    reply = farm.run(pool.run_job(card_b, gpt_job(tiny_lm)))
    assert reply.ok and node_id[:8] in reply.worker_id  # run on the new machine's worker


def test_a_drained_machine_loses_no_task_and_its_accounts_pause_before_its_workers_stop(
    farm, anvil, deployment, relay, tiny_lm, tmp_path
):
    from concurrent.futures import ThreadPoolExecutor

    service, pool = farm.service, farm.service.pool
    card_a = farm.card("a")
    target = next(m.node_id for m in pool.machines() if m.state == "serving" and m.gpus.get(card_a.short_id))
    seen_when_workers_stop: list[int] = []
    finish_drain = pool.finish_drain

    async def finish_drain_seen(machine_, timeout_s):  # the on-chain state when the workers may stop
        seen_when_workers_stop.append(num_paused_now())
        return await finish_drain(machine_, timeout_s)

    def num_paused_now() -> int:  # on the farm's loop: read the chain synchronously through web3
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
        node = deployment.bind(w3).contract("Node")
        paused = (NodeStatus.PAUSED, NodeStatus.PENDING_PAUSE)
        return sum(NodeStatus(node.functions.nodeStatus(n.address).call()) in paused
                   for n in service.coordinator.nodes.of_card(card_a))  # fmt: skip

    pool.finish_drain = finish_drain_seen
    try:
        with ThreadPoolExecutor(1) as app:
            paid = app.submit(
                pay_for_tasks, anvil, deployment, relay, tiny_lm, range(10, 12), tmp_path / "app"
            )
            farm.wait_for(lambda: machine(farm, target).num_running > 0 or paid.done(), what="a job there")
            view = farm.run(service.drain(target, timeout_s=300))
            results = paid.result(timeout=400)
    finally:
        pool.finish_drain = finish_drain
    assert view.state == "drained" and view.is_safe_to_remove and view.num_alive_workers == 0
    assert seen_when_workers_stop == [2]  # both of its places' accounts paused before its workers stopped
    assert len(results) == 2 and all(files for files in results)
    no_slash(farm)

    view = farm.run(service.undrain(target))
    farm.wait_for(lambda: num_paused(farm) == 0, timeout_s=120, what="its accounts resumed")
    assert view.state == "serving" and view.num_alive_workers == 2


def test_a_rolling_upgrade_moves_card_a_to_its_new_runtime_and_the_old_accounts_quit_with_their_stakes(
    farm, anvil, deployment, relay, tiny_lm, tmp_path
):
    service, pool, coordinator = farm.service, farm.service.pool, farm.service.coordinator
    old, new = farm.card("a"), farm.card("a_new")
    rolled = [m.node_id for m in pool.machines() if m.state == "serving" and m.gpus.get(old.short_id)]
    old_accounts = [n.address for n in coordinator.nodes.of_card(old)]
    balances = {a: farm.run(coordinator.ops.balance(a)) for a in old_accounts}
    upgraded = farm.add_machine(a_new=3)  # the first machine on the new version (three places)
    for node_id in rolled:  # then machine by machine: drained, taken away (to be upgraded)
        assert farm.run(service.drain(node_id, timeout_s=300)).state == "drained"
        farm.kill_machine(node_id)
    farm.wait_for(lambda: len([n for n in coordinator.accounts if n.card == new]) == 3, timeout_s=180,
                  what="the new runtime's accounts")  # fmt: skip
    farm.wait_for(lambda: {statuses(farm)[a] for a in old_accounts} == {NodeStatus.QUIT}, timeout_s=120,
                  what="the old runtime's accounts quit")  # fmt: skip
    stake = int(deployment.bind(farm_w3(anvil)).contract("Node").functions.nodeStake().call())
    for address in old_accounts:  # the stake came back to each (less the gas of its pause and quit)
        assert farm.run(coordinator.ops.balance(address)) > balances[address] + stake * 9 // 10
    (files,) = pay_for_tasks(anvil, deployment, relay, tiny_lm, range(20, 21), tmp_path / "app")
    assert files and machine(farm, upgraded).state == "serving"
    no_slash(farm)


def farm_w3(anvil):
    from web3 import Web3

    return Web3(Web3.HTTPProvider(anvil.rpc_url))
