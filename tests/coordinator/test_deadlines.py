"""The coordinator and the contract's deadlines (issue 25): the farm discloses in the response window a
late last commitment leaves it, past the task's first deadline, and a relay it cannot reach is never
reported as arguments that never came (the relay's receipt would refute the report, which is slashed)."""

from __future__ import annotations

import asyncio

from cluster.chain.anvil import free_port
from cluster.chain.contracts import DEFAULT_NODE_STAKE_WEI
from cluster.coordinator.round_state import Outcome, Step
from tests.coordinator.factories import (
    CARD,
    coordinator_settings,
    create_task,
    gpt_args,
    rounds_end,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner


def rpc(w3, method: str, params: list) -> object:
    response = w3.provider.make_request(method, params)
    assert "error" not in response, (method, params, response)  # e.g. a timestamp behind the latest block
    return response["result"]


def mine_at(w3, timestamp: int) -> None:
    rpc(w3, "evm_setNextBlockTimestamp", [timestamp])
    rpc(w3, "evm_mine", [])


def chain_deadline(task, task_id: int) -> int:
    fields = [c["name"] for c in task.functions.getTask(task_id).abi["outputs"][0]["components"]]
    return task.functions.getTask(task_id).call()[fields.index("deadline")]


def mined_at(w3, timestamp: int, call, sender: str) -> dict:
    """``call`` sent by ``sender`` and mined alone in a block at exactly ``timestamp``, its receipt checked:
    with automine on, anything else mined first would take the timestamp and push this call later."""
    rpc(w3, "evm_setAutomine", [False])
    try:
        tx = call.transact({"from": sender, "gas": 1_000_000})  # no estimate: it runs at a later time
        mine_at(w3, timestamp)
    finally:
        rpc(w3, "evm_setAutomine", [True])
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    block_time = w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert (receipt["status"], block_time) == (1, timestamp), (receipt, block_time)
    return receipt


def test_a_late_last_commitment_leaves_the_farm_the_window_to_disclose(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    contracts = deployment.bind(w3)
    task, node = contracts.contract("Task"), contracts.contract("Node")
    outsider = w3.eth.accounts[25]  # the third node of the card model: not the farm's
    args = gpt_args(tiny_lm_dir, seed=21)

    async def scenario():
        config = settings(anvil, deployment, relay, tmp_path, cards=(CARD,) * 2)
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path)) as coordinator:
            node.functions.join(*CARD.join_args).transact({"from": outsider, "value": DEFAULT_NODE_STAKE_WEI})
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)

            def farm_rounds():
                return coordinator.store.of_task(task_id)

            def committed() -> bool:
                return len(farm_rounds()) == 2 and all(r.step is Step.COMMITTED for r in farm_rounds())

            await run_until(coordinator, committed)
            deadline = int(farm_rounds()[0].deadline_chain_s)
            outsider_round = next(r for r in range(3) if r not in {t.round for t in farm_rounds()})
            assert chain_deadline(task, task_id) == deadline  # the row's deadline is the contract's
            # The outsider commits five seconds before the deadline; the chain then moves past it.
            commit = task.functions.submitTaskResultCommitment(task_id, outsider_round, b"\x01" * 32)
            mined_at(w3, deadline - 5, commit, outsider)
            mine_at(w3, deadline + 10)
            await run_until(
                coordinator,
                lambda: all(r.step is Step.DONE and r.outcome is Outcome.PAID for r in farm_rounds()),
            )
            return task_id, deadline, [r.node for r in farm_rounds()]

    task_id, deadline, farm = asyncio.run(scenario())
    # The last commitment moved the deadline to the window after it; the success, itself past the first
    # deadline, moved it again for the upload.
    moved = [e["args"] for e in task.events.TaskDeadlineMoved().get_logs(from_block=deployment.block_number)]
    assert moved[0] == {"taskId": task_id, "deadline": deadline - 5 + 120}
    assert all(later["deadline"] > moved[0]["deadline"] for later in moved[1:])
    disclosures = task.events.TaskResultDisclosed().get_logs(from_block=deployment.block_number)
    assert sorted(d["args"]["node"] for d in disclosures) == sorted(farm)
    assert all(w3.eth.get_block(d["blockNumber"])["timestamp"] > deadline for d in disclosures)
    assert task.events.TaskAborted().get_logs(from_block=deployment.block_number) == []


def test_a_relay_out_of_reach_is_never_reported_as_arguments_that_never_came(
    w3, anvil, deployment, operator, tiny_lm_dir, tmp_path
):
    task = deployment.bind(w3).contract("Task")
    owner = {"from": deployment.owner}  # both reverted with the test's snapshot
    task.functions.setTaskTimeout(8).transact(owner)
    task.functions.setArgumentsWait(2, 1_000).transact(owner)
    unreachable = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = coordinator_settings(anvil.rpc_url, deployment, unreachable, tmp_path)

    async def scenario():
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path)) as coordinator:
            task_id = create_task(w3, deployment, gpt_args(tiny_lm_dir, seed=22))
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.CANCELLED), timeout_s=60)
            return task_id

    task_id = asyncio.run(scenario())
    assert task.events.TaskNoArgumentsReported().get_logs(from_block=deployment.block_number) == []
    aborted = task.events.TaskAborted().get_logs(from_block=deployment.block_number)
    assert [(e["args"]["taskId"], e["args"]["reason"]) for e in aborted] == [(task_id, "Task Cancelled")]
