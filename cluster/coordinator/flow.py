"""The steps of one (task, round) for one of the farm's nodes, each safe to replay after a crash.

    SELECTED --args, run--> EXECUTED --commit--> COMMITTED --disclose--> DISCLOSED --result node--> UPLOADING
       \\--task invalid--> ERROR_FOUND --reportTaskError--> DISCLOSED     events --> DONE (paid/slashed/...)

A step writes what it produced to the store before the transaction that depends on it goes out (result,
nonce and files before the commitment), and sends under an idempotency key, so a crash at any point
replays to the same transactions. Steps that wait for the chain (all commitments in, the decision)
return False and are woken by the chain watch. Past the deadline the node cancels the task.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from eth_account.signers.local import LocalAccount

from cluster.chain.revert import ContractRevert
from cluster.coordinator.chain_ops import ChainOps
from cluster.coordinator.store import NodeTask, Step, TaskStore
from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.hashes import gpt_result, new_nonce, task_hash
from cluster.protocol.phash import sd_result, sd_results_match
from cluster.protocol.task import TaskType, parse_task_args
from cluster.relay import RelayClient

log = logging.getLogger(__name__)


class JobRunner(Protocol):
    """Runs a job on a worker of a card model (cluster.workers.pool.WorkerPool)."""

    async def run_job(
        self, card_key: bytes, task_type: int, args_json: str, *, deadline: float, model_hint: str | None
    ) -> object: ...


@dataclass
class FlowContext:
    store: TaskStore
    ops: ChainOps
    pool: JobRunner
    accounts: dict[str, LocalAccount]  # node address -> its account
    card_of: dict[str, bytes]  # node address -> its card model key
    relay_for: Callable[[str], RelayClient]  # node address -> a relay client signing as that node
    chain_time: Callable[[], float]  # the latest block's timestamp the coordinator has seen
    seconds_left: Callable[[NodeTask], float]  # until the task's deadline, by the chain's clock
    on_disagreement: Callable[[NodeTask, list[NodeTask]], Awaitable[None]]
    guard_own_results: bool = True
    # Called at the points where a crash is most instructive; tests make it kill the process there.
    checkpoint: Callable[[str, NodeTask], None] = lambda point, task: None
    corrupt_nodes: frozenset[str] = frozenset()  # a test fault: these nodes commit wrong results


async def advance(ctx: FlowContext, task: NodeTask) -> bool:
    """Take the next step of ``task``; True when it moved, False when it waits for the chain."""
    if task.step is Step.DONE:
        return False
    if ctx.chain_time() > task.deadline and task.step is not Step.UPLOADING:
        return await _cancel(ctx, task)
    handler = _HANDLERS[task.step]
    return await handler(ctx, task)


async def _selected(ctx: FlowContext, task: NodeTask) -> bool:
    deadline = await ctx.ops.task_deadline(task.task_id)
    if deadline is None:  # ended before we got to it (cancelled, or decided without us)
        ctx.store.patch(task.task_id, task.round, step=Step.DONE)
        return True
    if deadline != task.deadline:
        task = replace(task, deadline=float(deadline))
        ctx.store.patch(task.task_id, task.round, deadline=task.deadline)
    args_json = task.args_json
    if args_json is None:
        relay = ctx.relay_for(task.node)
        args_json = await relay.get_args(task.task_id, wait_s=max(1.0, ctx.seconds_left(task)))
        if task_hash(args_json) != task.task_hash:  # the relay checks this too; never run unverified args
            raise RuntimeError(f"task {task.task_id}: the relay's arguments do not hash to the taskHash")
        task = replace(task, args_json=args_json)
        ctx.store.patch(task.task_id, task.round, args_json=args_json)
    try:
        args = parse_task_args(task.task_type, args_json)
    except ArgumentsInvalid as exc:
        return _found_error(ctx, task, exc.code.value, exc.message)
    model_hint = getattr(args, "model", None) or getattr(args, "base_model_name", None)
    job = await ctx.pool.run_job(
        ctx.card_of[task.node],
        task.task_type,
        args_json,
        deadline=time.time() + ctx.seconds_left(task),
        model_hint=model_hint,
    )
    error = getattr(job, "error", None)
    if error is not None:  # the pool returns only task errors; transient ones it retried until the deadline
        return _found_error(ctx, task, error.code.value, error.message)
    files: list[bytes] = list(job.files)  # type: ignore[attr-defined]
    result: bytes = job.result  # type: ignore[attr-defined]
    if task.node in ctx.corrupt_nodes:  # a test fault: this node's GPU returns wrong results
        files, result = corrupted(task.task_type, files)
    ctx.store.write_files(task.task_id, task.round, files)
    # result, nonce and files on disk before the commitment can be sent
    ctx.store.patch(
        task.task_id,
        task.round,
        step=Step.EXECUTED,
        result=result,
        nonce=new_nonce(),
        num_files=len(files),
    )
    log.info("[coordinator] executed task=%d round=%d node=%s", task.task_id, task.round, task.node)
    return True


def _found_error(ctx: FlowContext, task: NodeTask, code: str, message: str) -> bool:
    log.warning(
        "[coordinator] task error task=%d round=%d code=%s message=%s",
        task.task_id,
        task.round,
        code,
        message,
    )
    ctx.store.patch(task.task_id, task.round, step=Step.ERROR_FOUND, error=f"{code}: {message}")
    return True


async def _executed(ctx: FlowContext, task: NodeTask) -> bool:
    assert task.result is not None and task.nonce is not None
    ctx.checkpoint("before_commit", task)
    await ctx.ops.commit(ctx.accounts[task.node], task.task_id, task.round, task.result, task.nonce)
    ctx.checkpoint("after_commit", task)
    ctx.store.patch(task.task_id, task.round, step=Step.COMMITTED)
    return True


async def _error_found(ctx: FlowContext, task: NodeTask) -> bool:
    await ctx.ops.report_error(ctx.accounts[task.node], task.task_id, task.round)
    ctx.store.patch(
        task.task_id, task.round, step=Step.DISCLOSED
    )  # an error report is commitment and disclosure
    return True


async def _committed(ctx: FlowContext, task: NodeTask) -> bool:
    if not task.commitments_ready:
        return False
    if ctx.guard_own_results:
        siblings = [
            t for t in ctx.store.of_task(task.task_id) if t.round != task.round and t.result is not None
        ]
        if any(not _agree(task, other) for other in siblings):
            await ctx.on_disagreement(task, siblings)
            return False  # nothing of ours is disclosed; the task is cancelled at its deadline
    assert task.result is not None and task.nonce is not None
    await ctx.ops.disclose(ctx.accounts[task.node], task.task_id, task.round, task.result, task.nonce)
    ctx.checkpoint("after_disclose", task)
    ctx.store.patch(task.task_id, task.round, step=Step.DISCLOSED)
    return True


async def _disclosed(ctx: FlowContext, task: NodeTask) -> bool:
    if not task.is_result_node:
        return False  # settled, slashed or aborted by events
    ctx.store.patch(task.task_id, task.round, step=Step.UPLOADING)
    return True


async def _uploading(ctx: FlowContext, task: NodeTask) -> bool:
    files = ctx.store.read_files(task.task_id, task.round)
    relay = ctx.relay_for(task.node)
    ctx.checkpoint("before_upload", task)
    await relay.upload_results(task.task_id, files, wait_s=max(1.0, ctx.seconds_left(task)))
    ctx.checkpoint("after_upload", task)
    await ctx.ops.report_uploaded(ctx.accounts[task.node], task.task_id, task.round)
    log.info("[coordinator] results uploaded task=%d node=%s", task.task_id, task.node)
    return False  # TaskNodeSuccess marks it done


async def _cancel(ctx: FlowContext, task: NodeTask) -> bool:
    try:
        await ctx.ops.cancel(ctx.accounts[task.node], task.task_id)
    except ContractRevert as exc:
        if await ctx.ops.task_deadline(task.task_id) is not None:
            raise  # still running: a real refusal (e.g. the deadline by chain time not yet passed)
        log.info("[coordinator] task already ended task=%d (%s)", task.task_id, exc.name)
    return False  # TaskAborted / TaskNodeCancelled mark it done


def corrupted(task_type: int, files: list[bytes]) -> tuple[list[bytes], bytes]:
    """Files changed so that their result differs from an honest node's (the slash tests' fault)."""
    if task_type == TaskType.GPT:
        changed = [files[0].replace(b'"content": "', b'"content": "corrupt ', 1)]
        return changed, gpt_result(changed[0])
    from PIL import Image, ImageOps  # flipping each image moves its pHash far beyond the threshold

    flipped = []
    for data in files:
        out = io.BytesIO()
        ImageOps.invert(Image.open(io.BytesIO(data)).convert("RGB")).save(out, format="PNG")
        flipped.append(out.getvalue())
    return flipped, sd_result(flipped)


def _agree(a: NodeTask, b: NodeTask) -> bool:
    assert a.result is not None and b.result is not None
    if a.task_type == TaskType.GPT:
        return a.result == b.result
    return sd_results_match(a.result, b.result)


_HANDLERS: dict[Step, Callable[[FlowContext, NodeTask], Awaitable[bool]]] = {
    Step.SELECTED: _selected,
    Step.EXECUTED: _executed,
    Step.ERROR_FOUND: _error_found,
    Step.COMMITTED: _committed,
    Step.DISCLOSED: _disclosed,
    Step.UPLOADING: _uploading,
}
