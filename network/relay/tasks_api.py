"""The relay's task endpoints (PROTOCOL.md, Relay API). Every request is signed and checked against what
the relay has seen on chain; every refusal is a 4xx with its reason and stores nothing.

The downloads, most of the relay's traffic, run in the event loop: their work is one read by primary key
and one signature recovery (about 0.1 ms each), while FastAPI's hop to its thread pool for a plain ``def``
cost about 0.9 ms of CPU per request (benchmarks/relay_throughput.py). Their read does not hold the loop:
on PostgreSQL it waits in psycopg's async driver while the loop serves other requests (``seen_async``).
The argument upload parses, hashes, writes and fsyncs several MiB, so it stays a plain function in the
thread pool; the results upload reads its body as it arrives (``results_upload``) and fsyncs in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cluster.chain.contracts import Validation
from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.hashes import task_hash
from cluster.protocol.results import ResultFilesInvalid, check_result_files
from cluster.protocol.signing import bound_params
from cluster.protocol.task import TaskType, check_within_cap, parse_task_args
from network.json_body import ParsedJsonRoute
from network.relay.access import RelayAccess, RelayDep
from network.relay.errors import RelayError, envelope, not_yet
from network.relay.files import StagedResults
from network.relay.ids import FileIndex, TaskId, Timestamp
from network.relay.results_upload import RESULTS_FORM_SCHEMA, receive_results
from network.relay.schema import TaskState
from network.relay.store import TaskRecord

Signature = Annotated[str, Query(min_length=1, max_length=200)]

router = APIRouter(prefix="/v1/inference_tasks", route_class=ParsedJsonRoute)


class ArgsUpload(BaseModel):
    # strict: the signed task_id is the integer the protocol names, never "104", 104.0 or true
    model_config = ConfigDict(extra="forbid", strict=True)
    task_id: int = Field(ge=0, lt=2**63)
    task_args: str
    timestamp: int = Field(ge=0, lt=2**40)
    signature: str = Field(min_length=1, max_length=200)
    # task_args holding a lone surrogate, which no UTF-8 text holds, never get here:
    # the body's parse refuses them (network.json_body)


class Envelope(BaseModel):
    message: str
    data: Any = None


@router.post("", response_model=Envelope)
def upload_args(body: ArgsUpload, relay: RelayDep) -> dict[str, Any]:
    if len(body.task_args.encode()) > relay.config.max_args_bytes:
        raise RelayError(413, f"task_args are larger than the limit of {relay.config.max_args_bytes} bytes")
    task = relay.seen(body.task_id)
    params = bound_params(
        "POST", "/v1/inference_tasks", {"task_id": body.task_id, "task_args": body.task_args}
    )
    relay.signer_of(params, body.timestamp, body.signature, {task.creator}, "only the task's creator uploads")
    if task_hash(body.task_args) != task.task_hash:
        raise RelayError(400, f"task_args hash to {task_hash(body.task_args).hex()}, not the task's "
                              f"taskHash {task.task_hash.hex()} on chain")  # fmt: skip
    try:
        args = parse_task_args(TaskType(task.task_type), body.task_args)
        check_within_cap(args, task.cap)
    except ArgumentsInvalid as exc:
        raise RelayError(400, f"task_args invalid: {exc.message}") from None
    if task.args_uploaded and task.args_uploaded_at is not None:
        stored_at = task.args_uploaded_at
    else:
        if not task.args_uploaded:
            relay.files.write_args(body.task_id, body.task_args.encode())
        stored_at = relay.store.mark_args_uploaded(body.task_id, relay.clock())
    # Signed once the arguments are stored for good: the receipt never claims more than the store holds.
    receipt = relay.receipt(body.task_id, stored_at)
    return envelope("task arguments stored", None if receipt is None else {"receipt": receipt.to_json()})


@router.get("/{task_id}", response_model=Envelope)
async def download_args(
    task_id: TaskId, timestamp: Timestamp, signature: Signature, relay: RelayDep
) -> dict[str, Any]:
    task = await relay.seen_async(task_id)
    what = "only the creator and the selected nodes read the arguments"
    params = bound_params("GET", f"/v1/inference_tasks/{task_id}", {"task_id": task_id})
    if not task.readers_are_final:
        # Queued: its nodes are not chosen yet, and a node asking now may be chosen when it starts. A
        # running sampled task: an audit's two nodes may be selected in a block the relay has not read yet.
        signer = relay.signer_of(params, timestamp, signature, None, what)
        if signer not in task.readers_of_args:
            if task.state is TaskState.PENDING:
                raise not_yet(f"task {task_id} is queued: its nodes have not been selected yet")
            raise not_yet(f"task {task_id} is sampled: the relay has not seen an audit select its nodes")
    relay.signer_of(params, timestamp, signature, task.readers_of_args, what)
    if not task.args_uploaded:
        raise not_yet(f"the arguments of task {task_id} have not been uploaded yet")
    task_args = (await relay.files.read_args_async(task_id)).decode()
    return envelope("ok", {"task_id": task_id, "task_args": task_args})


@router.post("/{task_id}/results", response_model=Envelope, openapi_extra=RESULTS_FORM_SCHEMA)
async def upload_results(task_id: TaskId, request: Request, relay: RelayDep) -> dict[str, Any]:
    task = await relay.seen_async(task_id)
    is_validated = task.state is TaskState.SUCCEEDED and task.result_node is not None
    if not (is_validated or task.is_sampled):  # a sampled task's first node may upload early (its form says)
        raise RelayError(409, f"task {task_id} has no validated result on chain yet")
    received = await receive_results(request, task, relay)  # signed, declared and hashed as they came
    staged = received.staged
    try:
        num_files = await asyncio.to_thread(_keep_results, relay, task, staged, received.early_result)
    finally:
        await asyncio.to_thread(staged.discard)
    return envelope("results stored", {"num_files": num_files})


def _keep_results(
    relay: RelayAccess, task: TaskRecord, staged: StagedResults, early_result: bytes | None
) -> int:
    """Check the staged files against the result on chain, or an early upload's against the result that
    opened round 0's commitment; then keep them. An early set is kept once with its result (the commitment
    binds one result: a second is the same); an ordinary one unless a set is there, or the early set of a
    sampled task was checked against this very result."""
    if early_result is None:
        result, against = task.result, "the result on chain"
    else:
        result, against = early_result, "the sealed result"
    assert result is not None
    try:
        check_result_files(task.task_type, result, staged.read_all())
    except ResultFilesInvalid as exc:
        raise RelayError(400, f"the uploaded files do not match {against}: {exc}") from None
    if early_result is not None:
        if task.num_early_files == 0:
            staged.commit()
            relay.store.mark_early_results_uploaded(task.task_id, early_result, staged.num_files)
    elif task.num_result_files == 0 and not _early_files_are_the_result(task):
        # Racing uploads (a retry, or two replicas): the first whole set renamed into place is the one
        # kept; every racer answers 200, since each upload matched the result on chain.
        staged.commit()
        relay.store.mark_results_uploaded(task.task_id, staged.num_files)
    return staged.num_files


@router.get("/{task_id}/results/{index}")
async def download_result(
    task_id: TaskId,
    index: FileIndex,
    timestamp: Timestamp,
    signature: Signature,
    relay: RelayDep,
) -> Response:
    task = await relay.seen_async(task_id)
    params = bound_params(
        "GET", f"/v1/inference_tasks/{task_id}/results/{index}", {"task_id": task_id, "index": index}
    )
    relay.signer_of(params, timestamp, signature, {task.creator}, "only the task's creator reads results")
    early = task.num_result_files == 0 and _early_files_served(task)
    num_files = task.num_early_files if early else task.num_result_files
    if num_files == 0:
        raise not_yet(f"the results of task {task_id} have not been uploaded yet")
    if index >= num_files:
        raise RelayError(400, f"task {task_id} has {num_files} result files; no index {index}")
    media = "application/json" if task.task_type == TaskType.GPT else "image/png"
    return Response(await relay.files.read_result_async(task_id, index, early=early), media_type=media)


def _early_files_are_the_result(task: TaskRecord) -> bool:
    return task.num_early_files > 0 and task.state is TaskState.SUCCEEDED and task.early_result == task.result


def _early_files_served(task: TaskRecord) -> bool:
    """A sampled task's early files go to its creator once the decision's result is theirs, and before any
    decision when the creator asked for its result early (Sampled); never after a decision that differs
    (the audit found the first node wrong: the result node's upload is served) or an abort."""
    if task.num_early_files == 0:
        return False
    if task.state is TaskState.RUNNING:
        return task.validation is Validation.SAMPLED
    return _early_files_are_the_result(task)
