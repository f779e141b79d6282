"""The relay's task endpoints (PROTOCOL.md, Relay API). Every request is signed and checked against what
the relay has seen on chain; every refusal is a 4xx with its reason and stores nothing.

The downloads, most of the relay's traffic, run in the event loop: their work is one read by primary key
and one signature recovery (about 0.1 ms each), while FastAPI's hop to its thread pool for a plain ``def``
cost about 0.9 ms of CPU per request (benchmarks/relay_throughput.py). A database far away would stall
the loop for its round trip: keep PostgreSQL near the replicas. The uploads write and fsync files, so
they stay plain functions in the thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.hashes import task_hash
from cluster.protocol.results import ResultFilesInvalid, check_result_files
from cluster.protocol.signing import bound_params
from cluster.protocol.task import TaskType, check_within_cap, parse_task_args
from network.relay.access import RelayDep
from network.relay.config import RelayConfig
from network.relay.errors import RelayError, envelope, not_yet
from network.relay.schema import TaskState

TaskId = Annotated[int, Path(ge=0, lt=2**63)]
Timestamp = Annotated[int, Query(ge=0, lt=2**40)]
Signature = Annotated[str, Query(min_length=1, max_length=200)]

router = APIRouter(prefix="/v1/inference_tasks")


class ArgsUpload(BaseModel):
    # strict: the signed task_id is the integer the protocol names, never "104", 104.0 or true
    model_config = ConfigDict(extra="forbid", strict=True)
    task_id: int = Field(ge=0, lt=2**63)
    task_args: str
    timestamp: int = Field(ge=0, lt=2**40)
    signature: str = Field(min_length=1, max_length=200)

    @field_validator("task_args")
    @classmethod
    def _utf8(cls, value: str) -> str:
        """JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 text holds: the taskHash is over
        the arguments' UTF-8 bytes, so there would be nothing to hash."""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not UTF-8 text: {exc.reason} at character {exc.start}") from None
        return value


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
    if not task.args_uploaded:
        relay.files.write_args(body.task_id, body.task_args.encode())
        relay.store.mark_args_uploaded(body.task_id)
    return envelope("task arguments stored")


@router.get("/{task_id}", response_model=Envelope)
async def download_args(
    task_id: TaskId, timestamp: Timestamp, signature: Signature, relay: RelayDep
) -> dict[str, Any]:
    task = relay.seen(task_id)
    what = "only the creator and the selected nodes read the arguments"
    params = bound_params("GET", f"/v1/inference_tasks/{task_id}", {"task_id": task_id})
    if task.state is TaskState.PENDING:
        # Queued: its nodes are not chosen yet, and a node asking now may be chosen when it starts.
        signer = relay.signer_of(params, timestamp, signature, None, what)
        if signer not in task.readers_of_args:
            raise not_yet(f"task {task_id} is queued: its nodes have not been selected yet")
    relay.signer_of(params, timestamp, signature, task.readers_of_args, what)
    if not task.args_uploaded:
        raise not_yet(f"the arguments of task {task_id} have not been uploaded yet")
    task_args = (await relay.files.read_args_async(task_id)).decode()
    return envelope("ok", {"task_id": task_id, "task_args": task_args})


@router.post("/{task_id}/results", response_model=Envelope)
def upload_results(
    task_id: TaskId,
    files_in: Annotated[list[UploadFile], File(alias="files")],
    timestamp: Annotated[int, Form(ge=0, lt=2**40)],
    signature: Annotated[str, Form(min_length=1, max_length=200)],
    relay: RelayDep,
) -> dict[str, Any]:
    task = relay.seen(task_id)
    if task.state is not TaskState.SUCCEEDED or task.result_node is None or task.result is None:
        raise RelayError(409, f"task {task_id} has no validated result on chain yet")
    blobs = _read_files(files_in, relay.config)  # bounded by the request guard; the signature covers them
    params = bound_params("POST", f"/v1/inference_tasks/{task_id}/results", {"task_id": task_id}, blobs)
    relay.signer_of(params, timestamp, signature, {task.result_node},
                    "only the task's result node uploads results")  # fmt: skip
    try:
        check_result_files(task.task_type, task.result, blobs)
    except ResultFilesInvalid as exc:
        raise RelayError(400, f"the uploaded files do not match the result on chain: {exc}") from None
    if task.num_result_files == 0:
        # Racing uploads (a retry, or two replicas): the first whole set renamed into place is the one
        # kept; every racer answers 200, since each upload matched the result on chain.
        relay.files.write_results(task_id, blobs)
        relay.store.mark_results_uploaded(task_id, len(blobs))
    return envelope("results stored", {"num_files": len(blobs)})


@router.get("/{task_id}/results/{index}")
async def download_result(
    task_id: TaskId,
    index: Annotated[int, Path(ge=0, lt=1024)],
    timestamp: Timestamp,
    signature: Signature,
    relay: RelayDep,
) -> Response:
    task = relay.seen(task_id)
    params = bound_params(
        "GET", f"/v1/inference_tasks/{task_id}/results/{index}", {"task_id": task_id, "index": index}
    )
    relay.signer_of(params, timestamp, signature, {task.creator}, "only the task's creator reads results")
    if task.num_result_files == 0:
        raise not_yet(f"the results of task {task_id} have not been uploaded yet")
    if index >= task.num_result_files:
        raise RelayError(400, f"task {task_id} has {task.num_result_files} result files; no index {index}")
    media = "application/json" if task.task_type == TaskType.GPT else "image/png"
    return Response(await relay.files.read_result_async(task_id, index), media_type=media)


def _read_files(uploads: list[UploadFile], config: RelayConfig) -> list[bytes]:
    if not uploads:
        raise RelayError(400, "no result files were uploaded")
    if len(uploads) > config.max_files:
        raise RelayError(413, f"{len(uploads)} files uploaded; the limit is {config.max_files}")
    blobs = []
    for index, upload in enumerate(uploads):
        data = upload.file.read(config.max_file_bytes + 1)
        if len(data) > config.max_file_bytes:
            raise RelayError(
                413, f"result file {index} is larger than the limit of {config.max_file_bytes} bytes"
            )
        blobs.append(data)
    return blobs
