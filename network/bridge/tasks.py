"""The bridge's durable record of its tasks (SQLite) and their result files (on disk).

A row (``BridgeTask``) is written before the task is paid for; its id is also the ApplicationClient
request id, so a bridge restarted at any point finishes the same chain task (never a second one) and still
serves its result. Events seen on chain are stored with the row (``EventView``), for the progress API.
A row ends validated, aborted (on chain, refund recorded) or failed (the bridge could not see it through:
``reason`` says why); a failed row whose task may still hold its fee on chain is swept once, for the
refund, after its deadline.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from cluster.durable_sqlite import open_durable
from cluster.protocol.task import TaskTypeName
from network.bridge.config import ValidationName

Status = Literal["queued", "running", "validated", "aborted", "failed"]
TERMINAL: tuple[Status, ...] = ("validated", "aborted", "failed")
_ENDED_SQL = "('validated', 'aborted', 'failed')"  # TERMINAL in SQL

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    task_type TEXT NOT NULL,
    task_args TEXT NOT NULL,
    vram_limit INTEGER NOT NULL,
    fee_wei TEXT,
    status TEXT NOT NULL,
    task_id INTEGER,
    selected_nodes TEXT NOT NULL DEFAULT '[]',
    reason TEXT,
    refund_wei TEXT NOT NULL DEFAULT '0',
    num_results INTEGER NOT NULL DEFAULT 0,
    events TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    deadline REAL NOT NULL,
    key_name TEXT NOT NULL DEFAULT '',
    swept INTEGER NOT NULL DEFAULT 0,
    validation TEXT NOT NULL DEFAULT 'full'
)
"""
# Columns added since a bridge.db may have been written (oldest first).
ADDED_COLUMNS = {
    "key_name": "TEXT NOT NULL DEFAULT ''",
    "swept": "INTEGER NOT NULL DEFAULT 0",
    "validation": "TEXT NOT NULL DEFAULT 'full'",
}


class SpendRefused(Exception):
    """A task the bridge will not pay for: ``status`` 402 (the wallet) or 429 (a key's limit)."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class EventView(BaseModel):
    """A chain event of the task as the API shows it: its ABI name and arguments, and when it was seen."""

    name: str
    at: float
    args: dict[str, Any]


class BridgeTask(BaseModel):
    id: str
    kind: Literal["chat", "image", "native"]
    model: str
    task_type: TaskTypeName
    task_args: str
    vram_limit: int = 0
    fee_wei: int | None = None
    status: Status = "queued"
    task_id: int | None = None
    selected_nodes: list[str] = []
    reason: str | None = None
    refund_wei: int = 0
    num_results: int = 0
    events: list[EventView] = []
    created_at: float
    deadline: float
    key_name: str = ""
    swept: bool = False  # a failed task's fee was looked after on chain (cancelled, or found ended)
    validation: ValidationName = "full"

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class TaskStore:
    def __init__(self, data_dir: Path):
        self.results_dir = data_dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = open_durable(data_dir / "bridge.db", SCHEMA, rows_by_name=True)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(tasks)")}
        for name, kind in ADDED_COLUMNS.items():  # a bridge.db written by an earlier version
            if name not in columns:
                self._db.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, record: BridgeTask) -> None:
        with self._lock:
            self._insert(record)

    def add_if_affordable(
        self, record: BridgeTask, *, balance_wei: int, reserve_wei: int, limits: SpendLimits
    ) -> None:
        """Record the task only if the wallet and the key's limits allow its fee, checked and recorded in
        one step: concurrent requests cannot all pass a check that together they break. The wallet must
        hold the fees of the tasks recorded but not yet paid on chain too."""
        fee = record.fee_wei or 0
        with self._lock:
            unpaid = self._sum_fees(f"task_id IS NULL AND status NOT IN {_ENDED_SQL}", ())
            if balance_wei - unpaid < fee + reserve_wei:
                raise SpendRefused(
                    402,
                    f"The bridge's wallet is too low to pay for this task: it holds {balance_wei} wei, "
                    f"{unpaid} wei of it promised to tasks being paid; the task costs {fee} wei plus a gas "
                    f"reserve of {reserve_wei} wei. The bridge operator must top it up.",
                    "insufficient_funds",
                )
            limits.check(
                fee, self._spent(record.key_name, 0.0), self._spent(record.key_name, limits.day_start)
            )
            self._insert(record)

    def _insert(self, record: BridgeTask) -> None:
        row = record.model_dump(include={"task_type"})  # its name, as the column has always held it
        self._db.execute(
            "INSERT INTO tasks (id, kind, model, task_type, task_args, vram_limit, fee_wei, status,"
            " created_at, deadline, key_name, validation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.kind, record.model, row["task_type"], record.task_args, record.vram_limit,
             _text(record.fee_wei), record.status, record.created_at, record.deadline, record.key_name,
             record.validation),
        )  # fmt: skip

    def _spent(self, key_name: str, since: float) -> int:
        """What a key's tasks created since ``since`` cost: fees less refunds (wei, exactly)."""
        rows = self._db.execute(
            "SELECT fee_wei, refund_wei FROM tasks WHERE key_name = ? AND created_at >= ?", (key_name, since)
        ).fetchall()
        return sum(int(r["fee_wei"] or 0) - int(r["refund_wei"] or 0) for r in rows)

    def _sum_fees(self, where: str, params: tuple[Any, ...]) -> int:
        rows = self._db.execute(f"SELECT fee_wei FROM tasks WHERE {where}", params).fetchall()
        return sum(int(r["fee_wei"] or 0) for r in rows)

    def get(self, task_id: str) -> BridgeTask | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else _record(row)

    def unfinished(self) -> list[BridgeTask]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM tasks WHERE status NOT IN {_ENDED_SQL} ORDER BY created_at"
            ).fetchall()
        return [_record(row) for row in rows]

    def to_sweep(self) -> list[BridgeTask]:
        """The tasks whose fee may still be held on chain: unfinished, or failed and not swept yet (one
        failed before its task id was recorded may have a task all the same: its request knows)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM tasks WHERE status NOT IN {_ENDED_SQL} "
                "OR (status = 'failed' AND swept = 0) ORDER BY created_at"
            ).fetchall()
        return [_record(row) for row in rows]

    def update(self, record_id: str, /, **fields: Any) -> None:
        encoded = {k: _encode(k, v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in encoded)
        with self._lock:
            self._db.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*encoded.values(), record_id))

    # -- result files --------------------------------------------------------------------------------

    def save_results(self, task_id: str, files: list[bytes]) -> None:
        folder = self.results_dir / task_id
        folder.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(files):
            part = folder / f"{index}.part"
            part.write_bytes(data)
            part.replace(folder / str(index))

    def result(self, task_id: str, index: int) -> bytes | None:
        path = self.results_dir / task_id / str(index)
        return path.read_bytes() if path.is_file() else None


@dataclass(frozen=True)
class SpendLimits:
    """A key's limits (None: none); ``day_start`` is the Unix time its UTC day began."""

    key_name: str
    max_fee_wei: int | None
    max_wei_per_day: int | None
    max_wei_total: int | None
    day_start: float

    def check(self, fee: int, spent_total: int, spent_today: int) -> None:
        for limit, spent, what in (
            (self.max_fee_wei, 0, "per task"),
            (self.max_wei_per_day, spent_today, "per day (UTC)"),
            (self.max_wei_total, spent_total, "in total"),
        ):
            if limit is not None and spent + fee > limit:
                raise SpendRefused(
                    429,
                    f"Key {self.key_name!r} may spend {limit} wei {what}; it has spent {spent} and this task "
                    f"costs {fee}.",
                    "spending_limit_exceeded",
                )


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _encode(key: str, value: Any) -> Any:
    if key in ("fee_wei", "refund_wei"):
        return _text(value)
    if key == "selected_nodes":
        return json.dumps(value)
    if key == "events":
        return json.dumps([e.model_dump() if isinstance(e, EventView) else e for e in value])
    return value


def _record(row: sqlite3.Row) -> BridgeTask:
    data = dict(row)
    data["selected_nodes"] = json.loads(data["selected_nodes"])
    data["events"] = json.loads(data["events"])
    return BridgeTask.model_validate(data)
