"""Sampled tasks (issue 28) run by the farm on the real chain, relay and workers: the lone node uploads its
files, waits for the draw and discloses, or starts the audit that the farm's other nodes then run; a task
error is sealed as the empty result. docs/rounds.md, "Sampled tasks".

The draw reads blockhash(c + 1), c the commitment's block. Anvil mines a block per transaction here, so
the test decides the draw: 260 blocks mined after the commitment make that hash read zero (audited);
two blocks make it real (audited 1 time in 10: the test then takes the next task)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace

from cluster.chain.contracts import DEFAULT_NODE_STAKE_WEI, AbortReason, Validation
from cluster.coordinator.coordinator import Coordinator
from cluster.coordinator.round_state import Outcome, Sampling, Step
from cluster.protocol.hashes import task_hash
from cluster.relay import RelayClient
from tests.coordinator.factories import (
    APP,
    CARD,
    SAMPLED_FEE,
    create_sampled,
    gpt_args,
    mine,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner

N = 10
POOL = 5 * 10**18


class DrawSteer:
    """Once a task's lone round committed, mines the blocks that make its draw: ``blocks`` of them."""

    def __init__(self, w3, coordinator: Coordinator, blocks: int):
        self.w3, self.coordinator, self.blocks = w3, coordinator, blocks
        self.steered: set[int] = set()

    def __call__(self, task_id: int) -> None:
        row = self.coordinator.store.get(task_id, 0)
        if task_id not in self.steered and row is not None and row.step is Step.COMMITTED:
            self.steered.add(task_id)
            mine(self.w3, self.blocks)


async def run_while(coordinator: Coordinator, done: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """The coordinator's loop until ``done`` (which may act on the chain between looks)."""
    stop = asyncio.Event()
    loop = asyncio.create_task(coordinator.run(stop))
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                assert not loop.done(), loop.exception()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await loop


def test_a_sampled_task_is_disclosed_alone_or_audited_by_the_farm_s_other_nodes(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    task = deployment.bind(w3).contract("Task")
    owner = {"from": deployment.owner}  # both reverted with the test's snapshot
    task.functions.setAuditRate(N).transact(owner)
    task.functions.fundAuditPool().transact(owner | {"value": POOL})

    async def scenario():
        async with running_coordinator(
            settings(anvil, deployment, relay, tmp_path), operator, LocalJobRunner(tmp_path)
        ) as coordinator:
            # 1. audited: 260 blocks after the commitment, the draw's hash reads zero
            args = gpt_args(tiny_lm_dir, seed=11)
            audited = create_sampled(w3, deployment, args, Validation.SAMPLED_RESULT_AFTER_AUDIT)
            await upload(relay, audited, args)
            steer = DrawSteer(w3, coordinator, 260)

            def audit_paid() -> bool:
                steer(audited)
                rows = coordinator.store.of_task(audited)
                return len(rows) == 3 and all(r.outcome is Outcome.PAID for r in rows)

            await run_while(coordinator, audit_paid)

            # 2. not audited: two blocks make the draw real; a task drawn for an audit is run through
            steer = DrawSteer(w3, coordinator, 2)
            alone: list[int] = []

            def one_alone_paid() -> bool:
                if not alone or len(coordinator.store.of_task(alone[-1])) == 3:  # none yet, or it was audited
                    return False
                steer(alone[-1])
                rows = coordinator.store.of_task(alone[-1])
                return len(rows) == 1 and rows[0].outcome is Outcome.PAID

            for seed in range(20, 25):
                args = gpt_args(tiny_lm_dir, seed=seed)
                alone.append(create_sampled(w3, deployment, args))
                await upload(relay, alone[-1], args)
                await run_while(coordinator, lambda: one_alone_paid() or _audit_done(coordinator, alone[-1]))
                if one_alone_paid():
                    break

            # 3. a task error, sealed: the model cannot load
            messages = [{"role": "user", "content": "x"}]
            bad = json.dumps({"model": str(tmp_path / "no-such-model"), "messages": messages})
            errored = create_sampled(w3, deployment, bad)
            await upload(relay, errored, bad)
            steer = DrawSteer(w3, coordinator, 2)

            def error_ended() -> bool:
                steer(errored)
                rows = coordinator.store.of_task(errored)
                return bool(rows) and all(r.step is Step.DONE for r in rows)

            await run_while(coordinator, error_ended)
            async with RelayClient(relay.url, APP) as app:
                files = {t: await app.get_result(t, 0) for t in (audited, alone[-1])}
            rows = {t: coordinator.store.of_task(t) for t in (audited, alone[-1], errored)}
            return audited, alone[-1], errored, rows, files, coordinator.status()

    audited, alone, errored, rows, files, status = asyncio.run(scenario())
    names = ("TaskAuditDrawn", "TaskAuditStarted", "TaskSuccess", "TaskAborted", "TaskNodeSuccess")
    logs = {name: getattr(task.events, name)().get_logs(from_block=deployment.block_number) for name in names}
    drawn = {e["args"]["taskId"]: e["args"]["isAudited"] for e in logs["TaskAuditDrawn"]}
    assert drawn[audited] is True and drawn[alone] is False
    # the audit: two more of the farm's nodes, the three results compared, everyone paid one run
    [started] = [e["args"] for e in logs["TaskAuditStarted"] if e["args"]["taskId"] == audited]
    assert [r.node for r in rows[audited]] == [started["firstNode"], started["auditor1"], started["auditor2"]]
    assert [r.is_audited for r in rows[audited]] == [True] * 3
    paid = {(e["args"]["taskId"], e["args"]["node"]): e["args"]["fee"] for e in logs["TaskNodeSuccess"]}
    run_pay = SAMPLED_FEE - SAMPLED_FEE * 22_000 // (N * 10_000 + 22_000)
    assert [paid[(audited, r.node)] for r in rows[audited]] == [run_pay] * 3
    # alone: one round, paid its run, no upload report (the disclosure ended the task)
    [lone] = rows[alone]
    assert lone.outcome is Outcome.PAID and lone.fee_earned == run_pay == paid[(alone, lone.node)]
    success = {e["args"]["taskId"]: bytes(e["args"]["result"]) for e in logs["TaskSuccess"]}
    for task_id in (audited, alone):  # the application reads each result, as the chain validated it
        assert success[task_id] == hashlib.sha256(files[task_id]).digest()
    # the sealed error: committed as the empty result, the task ended "Task error reported" at the lone
    # disclosure (the node paid its run), or, drawn for an audit (1 in 10), by the three errors' decision
    err = rows[errored][0]
    assert err.result == b"" and err.error and err.error.startswith("model_invalid")
    aborted = {e["args"]["taskId"]: e["args"]["reason"] for e in logs["TaskAborted"]}
    assert aborted[errored] == AbortReason.ERROR_REPORTED
    assert drawn[errored] is (len(rows[errored]) == 3)
    if not drawn[errored]:
        assert err.outcome is Outcome.PAID and paid[(errored, err.node)] == run_pay
    assert status.tasks.num_unfinished == 0
    # what `python -m cluster status` and the metrics count: every task here was sampled on a farm node
    audits = sum(drawn.values())
    assert status.tasks.sampled(Sampling.SAMPLED) == len(drawn)
    assert status.tasks.sampled(Sampling.AUDITED) == audits
    assert status.tasks.sampled(Sampling.AUDIT_ROUNDS) == 2 * audits
    assert status.tasks.sampled(Sampling.AUDIT_FAILED) == 0


def _audit_done(coordinator: Coordinator, task_id: int) -> bool:
    rows = coordinator.store.of_task(task_id)
    return len(rows) == 3 and all(r.step is Step.DONE for r in rows)


def test_an_audit_of_a_task_pending_before_the_farm_s_first_block_checks_its_arguments_against_its_log(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    """The audit's rounds start with a zero hash; the farm knows the task's from TaskPending, which here
    came before its first block (and the task's storage dropped it at the start): it reads that log."""
    task, node = deployment.bind(w3).contract("Task"), deployment.bind(w3).contract("Node")
    owner = {"from": deployment.owner}  # all reverted with the test's snapshot
    task.functions.setAuditRate(N).transact(owner)
    task.functions.fundAuditPool().transact(owner | {"value": POOL})
    outsiders = w3.eth.accounts[25:28]  # not the farm's: a sampled GPT task starts with three of its card
    for account in outsiders:
        node.functions.join(*CARD.join_args).transact({"from": account, "value": DEFAULT_NODE_STAKE_WEI})
    args = gpt_args(tiny_lm_dir, seed=31)
    task_id = create_sampled(w3, deployment, args)
    (started,) = task.events.TaskStarted().get_logs(from_block=deployment.block_number)
    first_node = started["args"]["selectedNode"]
    for account in set(outsiders) - {first_node}:  # the audit then takes the farm's two nodes
        node.functions.pause().transact({"from": account})
    config = settings(anvil, deployment, relay, tmp_path, cards=(CARD,) * 2)
    first_block = w3.eth.block_number + 1  # the farm follows the chain from after the task's TaskPending
    config = replace(config, endpoints=config.endpoints.model_copy(update={"start_block": first_block}))

    async def scenario():
        await upload(relay, task_id, args)
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path)) as coordinator:
            # the first node commits a result the audit will not confirm; the draw's hash then reads zero
            commit = task.functions.submitTaskResultCommitment(task_id, 0, b"\x01" * 32)
            w3.eth.wait_for_transaction_receipt(commit.transact({"from": first_node}))
            mine(w3, 260)
            start = task.functions.startAudit(task_id).transact({"from": first_node, "gas": 3_000_000})
            assert w3.eth.wait_for_transaction_receipt(start)["status"] == 1

            def audit_paid() -> bool:
                rows = coordinator.store.of_task(task_id)
                return len(rows) == 2 and all(r.outcome is Outcome.PAID for r in rows)

            await run_while(coordinator, audit_paid)
            return coordinator.store.of_task(task_id)

    rows = asyncio.run(scenario())
    assert {r.round for r in rows} == {1, 2} and all(r.failure is None for r in rows)
    assert all(r.task_hash == task_hash(args) for r in rows)  # from the log, not the zero they began with
    success = task.events.TaskSuccess().get_logs(from_block=deployment.block_number)
    assert [e["args"]["taskId"] for e in success] == [task_id]
