"""A results upload read as it arrives (PROTOCOL.md, Relay API; the form's order is in docs/relay.md).

The form's fields come first: ``timestamp``, ``signature`` and ``files_sha256`` (the hex sha256 of each
file in order, comma-separated: what the signature binds). At the first file part, before a byte of any
file is read, the request is checked as far as it can be without them: the number of files declared and
the signature's form, age and signer. Each file then streams to a staging folder on disk, bounded as it
arrives, and must hash to its declared sha256. A refusal answers at once; the server drops the rest of
the body unread, so an unauthenticated upload costs neither memory nor disk.

A sampled task's first node may upload before the task's decision (issue 28): its form also carries
``result`` and ``nonce`` (0x hex, bound by the signature), which must open round 0's commitment on chain;
its files are then checked against that result instead of the one on chain, and staged as an early set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from cluster.protocol.hashes import NONCE_BYTES, commitment
from cluster.protocol.results import ResultFilesInvalid, expected_num_files
from cluster.protocol.signing import bound_params
from network.relay.access import RelayAccess
from network.relay.errors import RelayError
from network.relay.files import StagedResults
from network.relay.ids import parse_canonical_int
from network.relay.schema import TaskState
from network.relay.store import TaskRecord

FIELD_NAMES = ("timestamp", "signature", "files_sha256")
SEALED_FIELD_NAMES = ("result", "nonce")  # an early upload's, both or neither
MAX_FIELD_BYTES = 2048  # the longest field: 16 hashes of 64 hex digits and their commas
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
BYTES_HEX = re.compile(r"0x(?:[0-9a-f]{2})*")

# What the OpenAPI schema says of the form (the endpoint reads the body itself, so FastAPI cannot).
RESULTS_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["timestamp", "signature", "files_sha256", "files"],
                    "properties": {
                        "timestamp": {"type": "integer", "minimum": 0},
                        "signature": {"type": "string", "maxLength": 200},
                        "files_sha256": {"type": "string", "description": "hex sha256s"},
                        "result": {"type": "string", "description": "0x hex; a sampled task's early upload"},
                        "nonce": {"type": "string", "description": "0x hex, 32 bytes; with result"},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                },
                "encoding": {"files": {"contentType": "application/octet-stream"}},
            }
        },
    }
}


@dataclass
class _FilePart:
    out: BinaryIO
    index: int
    num_bytes: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


@dataclass(frozen=True)
class ReceivedResults:
    staged: StagedResults
    early_result: bytes | None  # an early upload's result, which opened round 0's commitment


async def receive_results(request: Request, task: TaskRecord, relay: RelayAccess) -> ReceivedResults:
    """The upload's files staged on disk, each matching its declared sha256; a ``RelayError`` otherwise
    (nothing is left staged then)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise RelayError(400, "results come as multipart/form-data with a boundary")
    receiver = _ResultsReceiver(task, relay)
    parser = MultipartParser(boundary, receiver.callbacks(), max_header_count=4, max_header_size=1024)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            receiver.apply()
        parser.finalize()
        receiver.apply()
        return receiver.finish()
    except MultipartParseError as exc:
        receiver.discard()
        raise RelayError(400, f"the multipart body is malformed: {exc}") from None
    except ClientDisconnect:
        receiver.discard()
        raise RelayError(400, "the client went away before the upload ended") from None
    except BaseException:
        receiver.discard()
        raise


class _ResultsReceiver:
    """python-multipart's callbacks gathered per chunk, then applied in order: fields kept (small),
    the request checked at the first file, files streamed to the staging folder."""

    def __init__(self, task: TaskRecord, relay: RelayAccess):
        self.task, self.relay = task, relay
        self.fields: dict[str, str] = {}
        self.declared: list[str] | None = None  # the files' sha256, once the signature passed
        self.early_result: bytes | None = None  # an early upload's result, once it opened the commitment
        self.staged: StagedResults | None = None
        self._events: list[tuple[str, Any]] = []
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._part: _FilePart | tuple[str, bytearray] | None = None

    # -- python-multipart's callbacks: record only --------------------------------------------------------

    def callbacks(self) -> dict[str, Any]:
        def header_end() -> None:
            self._headers[self._header[0].lower()] = self._header[1]
            self._header = [b"", b""]

        return {
            "on_part_begin": lambda: self._headers.clear(),
            "on_header_field": lambda data, start, end: self._grow_header(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._grow_header(1, data[start:end]),
            "on_header_end": header_end,
            "on_headers_finished": lambda: self._events.append(("part", dict(self._headers))),
            "on_part_data": lambda data, start, end: self._events.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: self._events.append(("end", None)),
        }

    def _grow_header(self, which: int, data: bytes) -> None:
        self._header[which] += data

    # -- applying them ------------------------------------------------------------------------------------

    def apply(self) -> None:
        events, self._events = self._events, []
        for kind, payload in events:
            if kind == "part":
                self._begin(payload)
            elif kind == "data":
                self._data(payload)
            else:
                self._end()

    def _begin(self, headers: dict[bytes, bytes]) -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("latin-1")
        if name == "files":
            self._begin_file()
        elif name in FIELD_NAMES + SEALED_FIELD_NAMES and self.declared is None and name not in self.fields:
            self._part = (name, bytearray())
        elif name in FIELD_NAMES + SEALED_FIELD_NAMES:
            raise RelayError(400, f"the form field {name!r} comes twice, or after the files")
        else:
            expected = ", ".join(FIELD_NAMES)
            raise RelayError(
                400, f"unknown form field {name!r}: expected {expected}, files (and result, nonce)"
            )

    def _begin_file(self) -> None:
        if self.declared is None:
            self.declared = self._authorize()
            self.staged = self.relay.files.stage_results(
                self.task.task_id, early=self.early_result is not None
            )
        assert self.staged is not None
        if self.staged.num_files >= len(self.declared):
            raise RelayError(400, f"more files than the {len(self.declared)} that files_sha256 declares")
        self._part = _FilePart(self.staged.open_next(), self.staged.num_files - 1)

    def _data(self, data: bytes) -> None:
        part = self._part
        if isinstance(part, _FilePart):
            part.num_bytes += len(data)
            if part.num_bytes > self.relay.config.max_file_bytes:
                limit = self.relay.config.max_file_bytes
                raise RelayError(413, f"result file {part.index} is larger than the limit of {limit} bytes")
            part.sha256.update(data)
            part.out.write(data)
        elif part is not None:
            part[1].extend(data)
            if len(part[1]) > MAX_FIELD_BYTES:
                raise RelayError(400, f"the form field {part[0]!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _end(self) -> None:
        part, self._part = self._part, None
        if isinstance(part, _FilePart):
            part.out.close()
            assert self.declared is not None
            if part.sha256.hexdigest() != self.declared[part.index]:
                raise RelayError(
                    400, f"result file {part.index} hashes to {part.sha256.hexdigest()}, not the sha256 "
                         f"files_sha256 declares for it ({self.declared[part.index]})",
                )  # fmt: skip
        elif part is not None:
            try:
                self.fields[part[0]] = part[1].decode("utf-8")
            except UnicodeDecodeError:
                raise RelayError(400, f"the form field {part[0]!r} is not UTF-8 text") from None

    def _authorize(self) -> list[str]:
        """Everything that can be checked before the files: the fields and the signature over the declared
        sha256s (who asks comes first), then the number of files declared."""
        missing = [name for name in FIELD_NAMES if name not in self.fields]
        if missing:
            raise RelayError(
                400, f"the form fields {', '.join(missing)} must come before the files (fields first)"
            )
        timestamp = parse_canonical_int(self.fields["timestamp"], "timestamp", below=2**40)
        signature = self.fields["signature"]
        if not 0 < len(signature) <= 200:
            raise RelayError(400, "signature: must be 1 to 200 characters")
        declared = self.fields["files_sha256"].split(",")
        if not all(SHA256_HEX.fullmatch(digest) for digest in declared):
            raise RelayError(400, "files_sha256: expected each file's lowercase hex sha256, comma-separated")
        sealed = self._sealed()
        task_id = self.task.task_id
        signed = {"task_id": task_id} if sealed is None else {"task_id": task_id, **sealed[0]}
        path = f"/v1/inference_tasks/{task_id}/results"
        params = bound_params("POST", path, signed, files_sha256=declared)
        if sealed is None:
            result = self._validated_result(params, timestamp, signature)
        else:
            result = self._opened_commitment(params, timestamp, signature, *sealed[1])
        max_files = self.relay.config.max_files
        if len(declared) > max_files:
            raise RelayError(413, f"{len(declared)} files declared; the limit is {max_files}")
        where = "on chain" if self.early_result is None else "sealed"
        try:
            expected = expected_num_files(self.task.task_type, result)
        except ResultFilesInvalid as exc:
            raise RelayError(400, f"the result {where} names no files: {exc}") from None
        if len(declared) != expected:
            raise RelayError(
                400, f"the result {where} covers {expected} file(s); files_sha256 declares {len(declared)}"
            )
        return declared

    def _sealed(self) -> tuple[dict[str, str], tuple[bytes, bytes]] | None:
        """An early upload's result and nonce: as sent (what the signature binds) and as bytes."""
        given = [name for name in SEALED_FIELD_NAMES if name in self.fields]
        if not given:
            return None
        if len(given) == 1:
            raise RelayError(400, "an early upload carries both result and nonce, before the files")
        as_sent = {name: self.fields[name] for name in SEALED_FIELD_NAMES}
        if not all(BYTES_HEX.fullmatch(value) for value in as_sent.values()):
            raise RelayError(400, "result and nonce: expected 0x and lowercase hex bytes")
        result, nonce = (bytes.fromhex(as_sent[name][2:]) for name in SEALED_FIELD_NAMES)
        if len(nonce) != NONCE_BYTES:
            raise RelayError(400, f"nonce: expected {NONCE_BYTES} bytes, got {len(nonce)}")
        return as_sent, (result, nonce)

    def _validated_result(self, params: dict[str, Any], timestamp: int, signature: str) -> bytes:
        """The ordinary upload: the result node's, after the task's TaskSuccess."""
        task = self.task
        if task.state is not TaskState.SUCCEEDED or task.result is None or task.result_node is None:
            raise RelayError(
                409, f"task {task.task_id} has no validated result on chain yet (before it, only a sampled "
                     f"task's first node uploads, with its result and nonce)",
            )  # fmt: skip
        self.relay.signer_of(params, timestamp, signature, {task.result_node},
                             "only the task's result node uploads results")  # fmt: skip
        return task.result

    def _opened_commitment(
        self, params: dict[str, Any], timestamp: int, signature: str, result: bytes, nonce: bytes
    ) -> bytes:
        """An early upload: the first node's, of the result that opens its commitment on chain."""
        task = self.task
        if not task.is_sampled:
            raise RelayError(
                400, f"task {task.task_id} is not sampled: its results are uploaded after its TaskSuccess, "
                     f"without result and nonce",
            )  # fmt: skip
        first = task.selected_nodes.get(0)
        if first is None:
            raise RelayError(409, f"task {task.task_id} is queued: its node has not been selected yet")
        what = "only a sampled task's first node uploads before its decision"
        signer = self.relay.signer_of(params, timestamp, signature, {first}, what)
        if task.commitment is None:
            raise RelayError(409, f"the relay has not seen round 0's commitment of task {task.task_id} yet")
        if commitment(result, nonce, signer) != task.commitment:
            raise RelayError(
                400, f"result and nonce do not open round 0's commitment on chain ({task.commitment.hex()})"
            )
        if not result:
            raise RelayError(400, "the empty result is a sealed error: there are no files to upload")
        self.early_result = result
        return result

    def finish(self) -> ReceivedResults:
        if self.declared is None or self.staged is None:
            raise RelayError(400, "no result files were uploaded")
        if self.staged.num_files != len(self.declared):
            raise RelayError(
                400, f"files_sha256 declares {len(self.declared)} files; {self.staged.num_files} came"
            )
        return ReceivedResults(self.staged, self.early_result)

    def discard(self) -> None:
        if isinstance(self._part, _FilePart):
            self._part.out.close()
        if self.staged is not None:
            self.staged.discard()
