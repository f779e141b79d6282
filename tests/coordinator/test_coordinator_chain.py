"""The coordinator against a real anvil, the real contracts and the real relay, with real engines.

An application creates GPT tasks on chain and uploads their arguments; the coordinator's three nodes
(one card model) must run them, commit, disclose, upload and be paid, and survive restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.round_state import Outcome, Step
from cluster.relay import RelayClient
from network.relay.background import RunningRelay
from network.relay.config import RelayConfig
from tests.coordinator.factories import (
    APP,
    CARD,
    create_task,
    gpt_args,
    pass_the_deadline,
    rounds_end,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner
from tests.faults import CorruptingRunner


def test_nodes_join_with_their_card_model_and_stake(w3, anvil, deployment, relay, operator, tmp_path):
    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path), join=False
        ) as coordinator:
            statuses = await coordinator.join_nodes()
            again = await coordinator.join_nodes()  # a restart: nothing is sent twice
            return statuses, again

    statuses, again = asyncio.run(scenario())
    assert set(statuses.values()) == {NodeStatus.AVAILABLE} and statuses == again
    node = deployment.bind(w3).contract("Node")
    (outputs,) = node.get_function_by_name("nodeInfo").abi["outputs"]
    names = [c["name"] for c in outputs["components"]]
    for address in statuses:
        info = dict(zip(names, node.functions.nodeInfo(address).call(), strict=True))
        assert (info["cardModelKey"], info["gpuName"], info["gpuVramGB"]) == (
            CARD.key,
            CARD.gpu_name,
            CARD.vram_gb,
        )


def test_gpt_tasks_run_end_to_end_and_are_paid(w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path):
    args = [gpt_args(tiny_lm_dir, seed=s) for s in (1, 2)]

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path)
        ) as coordinator:
            task_ids = []
            for a in args:
                task_ids.append(create_task(w3, deployment, a))
                await upload(relay, task_ids[-1], a)

            def all_paid() -> bool:
                rows = [r for t in task_ids for r in coordinator.store.of_task(t)]
                return len(rows) == 6 and all(r.outcome is Outcome.PAID for r in rows)

            await run_until(coordinator, all_paid)
            async with RelayClient(relay.url, APP) as app:
                files = [await app.get_result(t, 0) for t in task_ids]
            return task_ids, files, coordinator.status(), coordinator.timeline.all()

    task_ids, files, status, timeline = asyncio.run(scenario())
    # the second task may have waited in the queue for the first: its rent went to the treasury
    task = deployment.bind(w3).contract("Task")
    rent = task.events.QueueRentPaid().get_logs(from_block=deployment.block_number)
    assert status.tasks.ended(Outcome.PAID) == 6
    assert status.earned_wei == 2 * 10**18 - sum(e["args"]["amount"] for e in rent)
    assert status.tasks.at(Step.DONE) == 6 and status.tasks.num_unfinished == 0
    # the stages each follow from the one before; a disclosure and the task's validation are seen
    # independently (by the sender's receipt and by the chain watch), so they are not ordered
    stages = ["selected", "args_fetched", "executed", "committed", "commitments_ready", "disclosed"]
    for round_stages in timeline.values():  # every round passed every stage, in order, timed
        assert [round_stages[s] for s in stages] == sorted(round_stages[s] for s in stages)
        assert round_stages["commitments_ready"] <= round_stages["validated"] <= round_stages["settled"]
        assert round_stages["engine_s"] > 0
        assert round_stages["chain_s"] > 0
    assert sum("uploaded" in r for r in timeline.values()) == 2  # the result node of each task
    for data in files:
        response = json.loads(data)
        assert response["choices"][0]["message"]["role"] == "assistant"
    success = task.events.TaskSuccess().get_logs(from_block=deployment.block_number)
    assert {e["args"]["taskId"]: bytes(e["args"]["result"]) for e in success} == {
        t: hashlib.sha256(f).digest() for t, f in zip(task_ids, files, strict=True)
    }


def test_invalid_arguments_are_reported_as_a_task_error(w3, anvil, deployment, relay, operator, tmp_path):
    # valid JSON for the relay, but a model the nodes cannot load: a task error, reported on chain
    args = json.dumps(
        {"model": str(tmp_path / "no-such-model"), "messages": [{"role": "user", "content": "x"}]}
    )

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path)
        ) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)

            await run_until(coordinator, rounds_end(coordinator, task_id))
            return task_id, coordinator.store.of_task(task_id)

    task_id, rows = asyncio.run(scenario())
    assert all(r.error and r.error.startswith("model_invalid") for r in rows)
    aborted = (
        deployment.bind(w3).contract("Task").events.TaskAborted().get_logs(from_block=deployment.block_number)
    )
    assert [(e["args"]["taskId"], e["args"]["reason"]) for e in aborted] == [(task_id, "Task error reported")]
    node = deployment.bind(w3).contract("Node")
    assert {NodeStatus(node.functions.nodeStatus(r.node).call()) for r in rows} == {NodeStatus.AVAILABLE}


def test_arguments_asking_for_more_than_the_cap_are_reported_as_a_task_error(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    """The relay refuses such arguments; a relay that did not check (written to its storage here) must not
    make the nodes run them: a task priced for 1 token asks for the default 256."""
    args = gpt_args(tiny_lm_dir, seed=4)

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path)
        ) as coordinator:
            task_id = create_task(w3, deployment, args, cap=1)
            while relay.service.store.get(task_id) is None:
                await asyncio.sleep(0.05)
            relay.service.files.write_args(task_id, args.encode())
            relay.service.store.mark_args_uploaded(task_id)

            await run_until(coordinator, rounds_end(coordinator, task_id))
            return task_id, coordinator.store.of_task(task_id)

    task_id, rows = asyncio.run(scenario())
    assert all(r.error and "above the task's cap of 1" in r.error for r in rows), [r.error for r in rows]
    task = deployment.bind(w3).contract("Task")
    aborted = task.events.TaskAborted().get_logs(from_block=deployment.block_number)
    assert [(e["args"]["taskId"], e["args"]["reason"]) for e in aborted] == [(task_id, "Task error reported")]


def test_arguments_that_never_come_are_reported_and_the_reporters_paid(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    task = deployment.bind(w3).contract("Task")
    # 2 s, 10% of the fee per reporting node; the second report leaves 2 s to refute the reports, then the
    # cancel ends the task (both reverted with the test's snapshot)
    task.functions.setArgumentsWait(2, 1_000).transact({"from": deployment.owner})
    task.functions.setResponseWindow(2).transact({"from": deployment.owner})
    args = gpt_args(tiny_lm_dir, seed=10)
    fee = 10**18

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path)
        ) as coordinator:
            balances = {n.address: w3.eth.get_balance(n.address) for n in coordinator.accounts}
            task_id = create_task(w3, deployment, args, fee=fee)  # the application never uploads them
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.CANCELLED), timeout_s=60)
            return task_id, balances

    task_id, before = asyncio.run(scenario())
    aborted = task.events.TaskAborted().get_logs(from_block=deployment.block_number)
    assert [(e["args"]["taskId"], e["args"]["reason"]) for e in aborted] == [
        (task_id, "Task arguments not delivered")
    ]
    paid = task.events.TaskNodeCompensated().get_logs(from_block=deployment.block_number)
    reported = task.events.TaskNoArgumentsReported().get_logs(from_block=deployment.block_number)
    # every reporter paid (the third may report within the window too), nobody else
    assert len(paid) >= 2 and {e["args"]["amount"] for e in paid} == {fee // 10}
    assert {e["args"]["node"] for e in paid} == {e["args"]["node"] for e in reported} <= set(before)
    node = deployment.bind(w3).contract("Node")
    assert {NodeStatus(node.functions.nodeStatus(n).call()) for n in before} == {NodeStatus.AVAILABLE}


def test_a_corrupt_slot_is_slashed_and_the_honest_slots_are_paid(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    args = gpt_args(tiny_lm_dir, seed=5)
    config = settings(anvil, deployment, relay, tmp_path, guard_own_results=False)
    runner = CorruptingRunner(LocalJobRunner(tmp_path), rounds={2})  # round 2's GPU returns wrong bytes

    async def scenario():
        async with running_coordinator(config, operator, runner) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)

            await run_until(coordinator, rounds_end(coordinator, task_id))
            return coordinator.store.of_task(task_id)

    rows = asyncio.run(scenario())
    corrupt_node = next(r.node for r in rows if r.round == 2)
    outcomes = {r.node: r.outcome for r in rows}
    assert outcomes.pop(corrupt_node) is Outcome.SLASHED
    assert set(outcomes.values()) == {Outcome.PAID}
    node = deployment.bind(w3).contract("Node")
    assert (
        NodeStatus(node.functions.nodeStatus(corrupt_node).call()) is NodeStatus.QUIT
    )  # removed, stake gone
    slashed = (
        deployment.bind(w3)
        .contract("Task")
        .events.TaskNodeSlashed()
        .get_logs(from_block=deployment.block_number)
    )
    assert [e["args"]["node"] for e in slashed] == [corrupt_node]


def test_own_slots_that_disagree_pause_the_card_model_before_any_commitment(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    args = gpt_args(tiny_lm_dir, seed=6)
    config = settings(anvil, deployment, relay, tmp_path)
    runner = CorruptingRunner(LocalJobRunner(tmp_path), rounds={1})

    async def scenario():
        async with running_coordinator(config, operator, runner) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            nodes = [n.address for n in coordinator.accounts]

            def held() -> bool:  # every round has its result and the card guard has paused the group
                rows = coordinator.store.of_task(task_id)
                statuses = {NodeStatus(node.functions.nodeStatus(n).call()) for n in nodes}
                return (
                    len(rows) == 3 and all(r.result for r in rows) and statuses == {NodeStatus.PENDING_PAUSE}
                )

            await run_until(coordinator, held)
            return task_id, coordinator.status(), nodes

    node = deployment.bind(w3).contract("Node")
    task_id, status, nodes = asyncio.run(scenario())
    assert f"disagree on task {task_id}" in status.alerts[0] and len(status.paused_cards) == 1
    task = deployment.bind(w3).contract("Task")
    # a commitment withheld would be slashed at the cancel: none is sent (nor any disclosure)
    commitments = task.events.TaskResultCommitmentSubmitted().get_logs(from_block=deployment.block_number)
    assert list(commitments) == []
    # busy with the task: each pauses when it ends (PendingPause), so no new task reaches the group
    assert {NodeStatus(node.functions.nodeStatus(n).call()) for n in nodes} == {NodeStatus.PENDING_PAUSE}


def test_tasks_complete_after_the_relay_comes_back(w3, anvil, deployment, operator, tiny_lm_dir, tmp_path):
    from cluster.chain.anvil import free_port

    port = free_port()
    relay_config = RelayConfig(
        rpc_url=anvil.rpc_url, task_address=deployment.address("Task"), data_dir=tmp_path / "relay",
        port=port, start_block=deployment.block_number, poll_interval_s=0.05,
    )  # fmt: skip
    args = gpt_args(tiny_lm_dir, seed=8)
    relay = RunningRelay(relay_config).start()
    config = settings(anvil, deployment, relay, tmp_path)

    async def scenario():
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path)) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            relay.stop()  # down before any node fetched the arguments
            # Its port answers nothing: each connection is closed unanswered, and counted.
            attempts = 0

            async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                nonlocal attempts
                attempts += 1
                writer.close()

            dead = await asyncio.start_server(hang_up, "127.0.0.1", port)
            stop = asyncio.Event()
            loop = asyncio.create_task(coordinator.run(stop))
            deadline = time.monotonic() + 60
            while attempts < 6:  # the three rounds each asked, and asked again
                assert time.monotonic() < deadline and not loop.done(), coordinator.status()
                await asyncio.sleep(0.05)
            rows = coordinator.store.of_task(task_id)
            assert {r.step for r in rows} == {Step.SELECTED} and not any(r.failure for r in rows)  # waiting
            dead.close()
            await dead.wait_closed()
            back = await asyncio.to_thread(RunningRelay(relay_config).start)
            try:
                deadline = time.monotonic() + 60
                while not all(r.outcome is Outcome.PAID for r in coordinator.store.of_task(task_id)):
                    assert time.monotonic() < deadline, coordinator.status()
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await loop
                await asyncio.to_thread(back.stop)

    asyncio.run(scenario())


def test_a_task_whose_arguments_never_come_is_cancelled_at_its_deadline(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    task = deployment.bind(w3).contract("Task")
    task.functions.setTaskTimeout(4).transact({"from": deployment.owner})  # reverted with the snapshot
    args = gpt_args(tiny_lm_dir, seed=9)

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path)
        ) as coordinator:
            task_id = create_task(w3, deployment, args)  # the application never uploads the arguments

            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.CANCELLED), timeout_s=60)
            return task_id, [s.account.address for s in coordinator.accounts]

    task_id, nodes = asyncio.run(scenario())
    aborted = task.events.TaskAborted().get_logs(from_block=deployment.block_number)
    assert [(e["args"]["taskId"], e["args"]["reason"]) for e in aborted] == [(task_id, "Task Cancelled")]
    node = deployment.bind(w3).contract("Node")
    assert {NodeStatus(node.functions.nodeStatus(n).call()) for n in nodes} == {NodeStatus.AVAILABLE}


def test_a_final_failure_stops_the_round_once_and_the_deadline_cancel_ends_it(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path, caplog
):
    args = gpt_args(tiny_lm_dir, seed=12)
    runner = LocalJobRunner(tmp_path)

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, runner
        ) as coordinator:
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)
            # The relay's copy is damaged on its disk: it now serves arguments that are not the task's.
            stored = relay.config.data_dir / "files" / str(task_id) / "args.json"
            stored.write_text(gpt_args(tiny_lm_dir, seed=13))

            def failed() -> bool:
                rows = coordinator.store.of_task(task_id)
                return len(rows) == 3 and all(r.failure for r in rows)

            await run_until(coordinator, failed)
            pass_the_deadline(w3)
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.CANCELLED), timeout_s=90)
            return coordinator.store.of_task(task_id)

    with caplog.at_level("WARNING", logger="cluster.coordinator"):
        rows = asyncio.run(scenario())
    assert all(r.failure and "ArgumentsMismatch" in r.failure for r in rows)  # recorded on the round
    assert all(r.args_json is None and r.result is None for r in rows) and runner.num_jobs == 0
    failed = [r for r in caplog.records if "round failed" in r.getMessage()]
    retried = [
        r for r in caplog.records if "retrying" in r.getMessage() and "ArgumentsMismatch" in r.getMessage()
    ]
    assert len(failed) == 3 and failed[0].exc_info is not None  # once per round, with the traceback
    assert retried == []  # the first release retried it with backoff until the deadline
