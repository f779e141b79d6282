"""The application's durable record of its requests: request id -> the task it created.

A row is written *before* createTask is signed, so after a crash the next process knows every request
that may have reached the chain, with the exact fee and arguments it was sent with, and can finish it
under the same idempotency key (the TxSender journal then settles the signed transaction instead of
signing a second one). States: ``sending`` (maybe signed, maybe mined), ``created`` (taskId known, the
arguments not yet on the relay), ``uploaded`` (done), ``rejected`` (a createTask revert was mined: that
idempotency key is spent, the request id cannot be reused). Beside them, the relay's receipt of each
task's uploaded arguments (``receipts``): what refutes a false "no arguments" report on chain.

Each request keeps its validation (issue 28) and the audit rate N it was priced at: a sampled request
priced at N > 1 is created with ``createTaskWithValidation``, any other with ``createTask``. A
requests.db written before those columns existed reads as Full at N = 1, which is what its tasks were.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cluster.chain.contracts import Validation
from cluster.durable_sqlite import open_durable
from cluster.protocol.receipts import ArgumentsReceipt
from cluster.protocol.task import TaskType
from network.app.errors import RequestConflict

RequestState = Literal["sending", "created", "uploaded", "rejected", "cancelled"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    task_type INTEGER NOT NULL,
    task_hash TEXT NOT NULL,
    task_args TEXT NOT NULL,
    fee_wei TEXT NOT NULL,
    vram_limit INTEGER NOT NULL,
    cap INTEGER NOT NULL,
    state TEXT NOT NULL,
    task_id INTEGER,
    block_number INTEGER,
    tx_hash TEXT,
    updated_at REAL NOT NULL,
    validation INTEGER NOT NULL DEFAULT 0,
    audit_rate INTEGER NOT NULL DEFAULT 1
)
"""
# Columns added since a requests.db may have been written (oldest first); old rows take the defaults.
ADDED_COLUMNS = {"validation": "INTEGER NOT NULL DEFAULT 0", "audit_rate": "INTEGER NOT NULL DEFAULT 1"}
RECEIPTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    task_id INTEGER PRIMARY KEY,
    stored_at INTEGER NOT NULL,
    signature TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    task_type: TaskType
    task_hash: bytes
    task_args: str
    fee_wei: int
    vram_limit: int
    cap: int
    state: RequestState = "sending"
    task_id: int | None = None
    block_number: int | None = None
    tx_hash: str | None = None
    validation: Validation = Validation.FULL  # as asked
    audit_rate: int = 1  # the N its fee was priced at; 1: a Full task (asked for, or N was 1)

    @property
    def is_sampled(self) -> bool:
        """Created with createTaskWithValidation: one node, audited 1 time in ``audit_rate``."""
        return self.validation != Validation.FULL and self.audit_rate > 1

    @property
    def idempotency_key(self) -> str:
        """The TxSender key of this request's createTask: one state change per (arguments, request id)."""
        return f"create:{self.task_hash.hex()}:{self.request_id}"

    def check_same_request(
        self,
        task_type: TaskType,
        digest: bytes,
        fee_wei: int | None,
        vram_limit: int,
        validation: Validation = Validation.FULL,
    ) -> None:
        """A request id names one request: the same arguments, fee (when given), VRAM limit and validation."""
        differs = [
            name
            for name, same in (
                ("task type", self.task_type == task_type),
                ("task arguments", self.task_hash == digest),
                ("fee", fee_wei is None or self.fee_wei == fee_wei),
                ("VRAM limit", self.vram_limit == vram_limit),
                ("validation", self.validation == validation),
            )
            if not same
        ]
        if differs:
            raise RequestConflict(f"request {self.request_id!r} was made with another {', '.join(differs)}")


class SubmissionStore:
    """SQLite, one file per application state dir; every write is durable when the call returns."""

    def __init__(self, path: str | Path):
        self._lock = threading.Lock()
        index = "CREATE INDEX IF NOT EXISTS requests_task ON requests (task_id);"
        self._db = open_durable(path, f"{SCHEMA};{RECEIPTS_SCHEMA}", rows_by_name=True)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(requests)")}
        for name, kind in ADDED_COLUMNS.items():  # a requests.db written by an earlier version
            if name not in columns:
                self._db.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")
        self._db.execute(index)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, request_id: str) -> RequestRecord | None:
        return self._one("SELECT * FROM requests WHERE request_id = ?", (request_id,))

    def by_task(self, task_id: int) -> RequestRecord | None:
        return self._one("SELECT * FROM requests WHERE task_id = ?", (task_id,))

    def unfinished(self) -> list[RequestRecord]:
        """Requests that may have a task on chain whose arguments are not yet on the relay."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM requests WHERE state IN ('sending', 'created') ORDER BY updated_at"
            ).fetchall()
        return [_record(row) for row in rows]

    def add(self, record: RequestRecord) -> RequestRecord:
        """Store a new request; when the id exists already, the stored row wins and is returned."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO requests (request_id, task_type, task_hash, task_args, fee_wei,"
                " vram_limit, cap, state, updated_at, validation, audit_rate)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'sending', ?, ?, ?)",
                (
                    record.request_id,
                    record.task_type,
                    record.task_hash.hex(),
                    record.task_args,
                    str(record.fee_wei),  # TEXT: fees pass SQLite's 64-bit integers
                    record.vram_limit,
                    record.cap,
                    time.time(),
                    int(record.validation),
                    record.audit_rate,
                ),
            )
        stored = self.get(record.request_id)
        assert stored is not None
        return stored

    def mark_created(self, request_id: str, task_id: int, block_number: int, tx_hash: str) -> None:
        self._update(
            "state = 'created', task_id = ?, block_number = ?, tx_hash = ?",
            (task_id, block_number, tx_hash),
            request_id,
        )

    def mark_uploaded(self, request_id: str) -> None:
        self._update("state = 'uploaded'", (), request_id)

    def mark_rejected(self, request_id: str) -> None:
        self._update("state = 'rejected'", (), request_id)

    def mark_cancelled(self, request_id: str) -> None:
        """Its arguments never reached the relay: the task was cancelled for a refund."""
        self._update("state = 'cancelled'", (), request_id)

    def save_receipt(self, receipt: ArgumentsReceipt) -> None:
        """The relay's receipt of a task's arguments; the first one kept (it states the earliest time)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO receipts (task_id, stored_at, signature) VALUES (?, ?, ?)",
                (receipt.task_id, receipt.stored_at_s, receipt.signature),
            )

    def receipt(self, task_id: int) -> ArgumentsReceipt | None:
        with self._lock:
            row = self._db.execute(
                "SELECT task_id, stored_at, signature FROM receipts WHERE task_id = ?", (task_id,)
            ).fetchone()
        return None if row is None else ArgumentsReceipt(*row)

    def delete(self, request_id: str) -> None:
        """Forget a request that provably never reached the chain (refused before signing)."""
        with self._lock:
            self._db.execute("DELETE FROM requests WHERE request_id = ?", (request_id,))

    def _update(self, assignments: str, values: tuple[Any, ...], request_id: str) -> None:
        with self._lock:
            self._db.execute(
                f"UPDATE requests SET {assignments}, updated_at = ? WHERE request_id = ?",
                (*values, time.time(), request_id),
            )

    def _one(self, sql: str, params: tuple[Any, ...]) -> RequestRecord | None:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return None if row is None else _record(row)


def _record(row: sqlite3.Row) -> RequestRecord:
    return RequestRecord(
        request_id=row["request_id"],
        task_type=TaskType(row["task_type"]),
        task_hash=bytes.fromhex(row["task_hash"]),
        task_args=row["task_args"],
        fee_wei=int(row["fee_wei"]),
        vram_limit=row["vram_limit"],
        cap=row["cap"],
        state=row["state"],
        task_id=row["task_id"],
        block_number=row["block_number"],
        tx_hash=row["tx_hash"],
        validation=Validation(row["validation"]),
        audit_rate=row["audit_rate"],
    )
