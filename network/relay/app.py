"""The relay's HTTP API (PROTOCOL.md, Relay API). Every task endpoint checks a signed request against
what the relay has seen on chain; every refusal is a 4xx with its reason and stores nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Path, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.hashes import task_hash
from cluster.protocol.phash import PHASH_BYTES, phash_bytes
from cluster.protocol.signing import SignatureInvalid, SignatureRefusal, verify_request
from cluster.protocol.task import TaskType, parse_task_args
from network.relay.config import RelayConfig
from network.relay.errors import RelayError, envelope, install_error_handlers, not_yet
from network.relay.files import FileStore
from network.relay.limits import BodySizeLimit
from network.relay.store import RelayStore, TaskRecord, TaskState

TaskId = Annotated[int, Path(ge=0, lt=2**63)]
Timestamp = Annotated[int, Query(ge=0, lt=2**40)]
Signature = Annotated[str, Query(min_length=1, max_length=200)]
REFUSAL_STATUS = {
    SignatureRefusal.MALFORMED: 401,
    SignatureRefusal.STALE: 401,
    SignatureRefusal.WRONG_SIGNER: 403,
}


class ArgsUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: int = Field(ge=0, lt=2**63)
    task_args: str
    timestamp: int = Field(ge=0, lt=2**40)
    signature: str = Field(min_length=1, max_length=200)


class Envelope(BaseModel):
    message: str
    data: Any = None


def create_app(
    config: RelayConfig,
    store: RelayStore,
    files: FileStore,
    *,
    stats: Any = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    app = FastAPI(title="Helium relay", version="1", responses={400: {"model": Envelope}})
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)

    def signer_of(
        params: dict[str, Any], timestamp: int, signature: str, allowed: set[str] | None, what: str
    ) -> str:
        """The request's signer; ``allowed`` None accepts any signer (the caller decides)."""
        try:
            return verify_request(
                params, timestamp, signature, now=clock(),
                expected_signers=None if allowed is None else sorted(allowed),
                max_skew_s=config.max_clock_skew_s,
            )  # fmt: skip
        except SignatureInvalid as exc:
            message = f"{what}: {exc.message}" if exc.reason is not SignatureRefusal.WRONG_SIGNER else (
                f"{what}: the signer is not allowed ({exc.message})"
            )  # fmt: skip
            raise RelayError(REFUSAL_STATUS[exc.reason], message) from None

    def seen(task_id: int) -> TaskRecord:
        task = store.get(task_id)
        if task is None:
            raise not_yet(f"task {task_id} has not been seen on chain yet")
        return task

    @app.post("/v1/inference_tasks", response_model=Envelope)
    def upload_args(body: ArgsUpload) -> dict[str, Any]:
        if len(body.task_args.encode()) > config.max_args_bytes:
            raise RelayError(413, f"task_args are larger than the limit of {config.max_args_bytes} bytes")
        task = seen(body.task_id)
        params = {"task_id": body.task_id, "task_args": body.task_args}
        signer_of(params, body.timestamp, body.signature, {task.creator}, "only the task's creator uploads")
        if task_hash(body.task_args) != task.task_hash:
            raise RelayError(400, f"task_args hash to {task_hash(body.task_args).hex()}, not the task's "
                                  f"taskHash {task.task_hash.hex()} on chain")  # fmt: skip
        try:
            parse_task_args(TaskType(task.task_type), body.task_args)
        except ArgumentsInvalid as exc:
            raise RelayError(400, f"task_args invalid: {exc.message}") from None
        if not task.args_uploaded:
            files.write_args(body.task_id, body.task_args.encode())
            store.mark_args_uploaded(body.task_id)
        return envelope("task arguments stored")

    @app.get("/v1/inference_tasks/{task_id}", response_model=Envelope)
    def download_args(task_id: TaskId, timestamp: Timestamp, signature: Signature) -> dict[str, Any]:
        task = seen(task_id)
        what = "only the creator and the selected nodes read the arguments"
        if task.state is TaskState.PENDING:
            # Queued: its nodes are not chosen yet, and a node asking now may be chosen when it starts.
            signer = signer_of({"task_id": task_id}, timestamp, signature, None, what)
            if signer not in task.readers_of_args:
                raise not_yet(f"task {task_id} is queued: its nodes have not been selected yet")
        signer_of({"task_id": task_id}, timestamp, signature, task.readers_of_args, what)
        if not task.args_uploaded:
            raise not_yet(f"the arguments of task {task_id} have not been uploaded yet")
        return envelope("ok", {"task_id": task_id, "task_args": files.read_args(task_id).decode()})

    @app.post("/v1/inference_tasks/{task_id}/results", response_model=Envelope)
    def upload_results(
        task_id: TaskId,
        files_in: Annotated[list[UploadFile], File(alias="files")],
        timestamp: Annotated[int, Form(ge=0, lt=2**40)],
        signature: Annotated[str, Form(min_length=1, max_length=200)],
    ) -> dict[str, Any]:
        task = seen(task_id)
        if task.state is not TaskState.SUCCEEDED or task.result_node is None or task.result is None:
            raise RelayError(409, f"task {task_id} has no validated result on chain yet")
        signer_of({"task_id": task_id}, timestamp, signature, {task.result_node},
                  "only the task's result node uploads results")  # fmt: skip
        blobs = _read_files(files_in, config)
        _check_result(task, blobs)
        if task.num_result_files == 0:
            files.write_results(task_id, blobs)
            store.mark_results_uploaded(task_id, len(blobs))
        return envelope("results stored", {"num_files": len(blobs)})

    @app.get("/v1/inference_tasks/{task_id}/results/{index}")
    def download_result(
        task_id: TaskId,
        index: Annotated[int, Path(ge=0, lt=1024)],
        timestamp: Timestamp,
        signature: Signature,
    ) -> Response:
        task = seen(task_id)
        signer_of({"task_id": task_id, "index": index}, timestamp, signature, {task.creator},
                  "only the task's creator reads results")  # fmt: skip
        if task.num_result_files == 0:
            raise not_yet(f"the results of task {task_id} have not been uploaded yet")
        if index >= task.num_result_files:
            raise RelayError(
                400, f"task {task_id} has {task.num_result_files} result files; no index {index}"
            )
        media = "application/json" if task.task_type == TaskType.GPT else "image/png"
        return Response(files.read_result(task_id, index), media_type=media)

    if stats is not None:
        stats.install(app)
    return app


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


def _check_result(task: TaskRecord, blobs: list[bytes]) -> None:
    """Recompute the result bytes from the files; they must equal what the result node disclosed."""
    assert task.result is not None
    if task.task_type == TaskType.GPT:
        if len(blobs) != 1:
            raise RelayError(400, f"a GPT task has one result file (0.json), got {len(blobs)}")
        computed = hashlib.sha256(blobs[0]).digest()
    else:
        if len(blobs) * PHASH_BYTES != len(task.result):
            expected = len(task.result) // PHASH_BYTES
            raise RelayError(400, f"the result on chain covers {expected} images, got {len(blobs)} files")
        hashes = []
        for index, blob in enumerate(blobs):
            try:
                hashes.append(phash_bytes(blob))
            except Exception as exc:  # Pillow raises many types for bad images
                raise RelayError(400, f"result file {index} is not a readable image: {exc}") from None
        computed = b"".join(hashes)
    if computed != task.result:
        raise RelayError(400, f"the uploaded files hash to {computed.hex()}, not the result on chain "
                              f"{task.result.hex()}")  # fmt: skip
