"""Rounds on two round-driver actors (real Ray, the local chain and relay): a driver killed in the
middle of rounds is restarted by Ray and resumes them from its journal; every round ends exactly once.

The farm has three accounts: indices 0 and 2 belong to driver 0, index 1 to driver 1, so each task's
rounds span both drivers and the card guard compares results across them (through the coordinator).
The kill is a failpoint at ``after_commit``: the commitment mined, the round's row not yet moved on; the
restarted driver must settle that commitment from its journal, not send another.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import ray
from eth_account import Account

from cluster.chain.accounts import MNEMONIC_ENV, OperatorKeys
from cluster.coordinator.round_state import Outcome
from cluster.failpoints import Failpoints
from tests.coordinator.driver_host import CoordinatorHost, CrashOnce
from tests.coordinator.factories import CARD, FUNDER, create_task, gpt_args, settings, upload
from tests.coordinator.local_runner import LocalJobRunner

NUM_TASKS = 3


@pytest.fixture
def farm_mnemonic(w3) -> Iterator[str]:
    """A fresh operator, funded; the drivers read its mnemonic from their environment, never an argument."""
    _, mnemonic = Account.create_with_mnemonic()
    operator = OperatorKeys.from_mnemonic(mnemonic).operator.address
    w3.eth.send_transaction({"from": FUNDER.address, "to": operator, "value": 5_000 * 10**18})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {MNEMONIC_ENV: mnemonic, "HF_HUB_OFFLINE": "1"}})  # fmt: skip
    try:
        yield mnemonic
    finally:
        ray.shutdown()


def wait_for(what, timeout_s: float = 180.0):
    deadline = time.monotonic() + timeout_s
    while not (value := what()):
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.2)
    return value


def test_a_killed_round_driver_resumes_its_rounds_and_each_ends_exactly_once(
    farm_mnemonic, w3, anvil, deployment, relay, tiny_lm_dir, tmp_path
):
    marker = tmp_path / "driver-crashed"
    config = settings(
        anvil, deployment, relay, tmp_path / "state", round_drivers=2,
        failpoints=Failpoints(checkpoint=CrashOnce("after_commit", marker)),
    )  # fmt: skip
    cache = tmp_path / "hub-cache"
    host = CoordinatorHost.remote(config, farm_mnemonic, lambda: LocalJobRunner(cache))
    join_block = w3.eth.block_number + 1  # the drivers send the joins too
    first_pids = ray.get(host.start.remote(), timeout=180)
    assert len(first_pids) == 2
    start_block = w3.eth.block_number

    task_ids = []
    for seed in range(NUM_TASKS):
        args = gpt_args(tiny_lm_dir, seed=seed)
        task_ids.append(create_task(w3, deployment, args))
        asyncio.run(upload(relay, task_ids[-1], args))

    def all_paid():
        status = ray.get(host.status.remote(), timeout=60)
        return status if status.tasks.ended(Outcome.PAID) == 3 * NUM_TASKS else None

    status = wait_for(all_paid)
    assert marker.exists(), "no driver reached the failpoint"  # the kill happened, in the middle of rounds
    died_pid = int(marker.read_text().split()[0])
    pids = ray.get(host.driver_pids.remote(), timeout=60)
    assert died_pid in first_pids and died_pid not in pids  # Ray restarted that driver: a new process
    assert status.tasks.num_unfinished == 0 and not status.tasks.by_failure, status

    # On chain: each of the farm's rounds settled once, paid, none slashed; one commitment per round and
    # no transaction of the farm's accounts reverted (nothing sent twice).
    task = deployment.bind(w3).contract("Task")
    nodes = {a.address for a in OperatorKeys.from_mnemonic(farm_mnemonic).nodes(3)}
    assert list(task.events.TaskNodeSlashed().get_logs(from_block=start_block)) == []
    successes = task.events.TaskNodeSuccess().get_logs(from_block=start_block)
    paid = Counter((e["args"]["taskId"], e["args"]["node"]) for e in successes)
    assert set(paid) == {(t, n) for t in task_ids for n in nodes} and set(paid.values()) == {1}
    commit = task.encode_abi("submitTaskResultCommitment", args=[0, 0, b"\0" * 32])[2:10]
    commits, reverted, gas_wei = Counter(), [], 0
    for number in range(join_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True).transactions:
            if tx["from"] in nodes:
                receipt = w3.eth.get_transaction_receipt(tx["hash"])
                gas_wei += receipt.gasUsed * receipt.effectiveGasPrice
                if receipt.status != 1:
                    reverted.append(tx["hash"].hex())
                if tx["input"][:4].hex() == commit:
                    commits[tx["from"]] += 1
    assert reverted == []
    assert commits == {n: NUM_TASKS for n in nodes}
    # The coordinator's ledger counts the gas its drivers' journals paid, every transaction once.
    card = CARD.short_id
    wait_for(lambda: ray.get(host.status.remote(), timeout=60).ledger.by_card.get(card, None) is not None)
    wait_for(lambda: ray.get(host.status.remote(), timeout=60).ledger.by_card[card].gas_wei >= gas_wei)
    assert ray.get(host.status.remote(), timeout=60).ledger.by_card[card].gas_wei == gas_wei

    final = ray.get(host.stop.remote(), timeout=180)
    assert final.tasks.ended(Outcome.PAID) == 3 * NUM_TASKS
