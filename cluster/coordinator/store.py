"""The coordinator's durable state: one row per (task, round) that one of the farm's nodes was selected
for (``round_state.NodeTask``), the caps of tasks seen pending, and the card models the card guard paused.

The rule that makes restarts safe: a step's inputs are written here *before* the transaction that depends
on them is sent (the result bytes, the nonce and the files before the commitment), and every transaction
is sent under an idempotency key (cluster.chain.sender), so replaying any step after a crash re-sends the
same signed bytes or nothing. Result files up to ``INLINE_FILES_MAX_BYTES`` are kept in the database,
written in the transaction of the row that names their result; larger ones beside it, written atomically.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from cluster.atomic_files import read_indexed_files, write_indexed_files
from cluster.chain.contracts import NODES_PER_TASK
from cluster.chain.task_events import (
    AuditDrawn,
    TaskAborted,
    TaskEvent,
    TaskPending,
    TaskSampled,
    TaskStarted,
)
from cluster.coordinator.round_state import NodeTask, Outcome, Sampling, Step, TaskCounts
from cluster.durable_sqlite import open_durable
from cluster.failures import FailureCode
from cluster.protocol.cards import CardModel

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_tasks (
    task_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    node TEXT NOT NULL,
    task_type INTEGER NOT NULL,
    task_hash TEXT NOT NULL,
    step TEXT NOT NULL,
    started_chain_s REAL,
    deadline_chain_s REAL NOT NULL,
    cap TEXT,
    args_json TEXT,
    result TEXT,
    nonce TEXT,
    num_files INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    commitments_ready INTEGER NOT NULL DEFAULT 0,
    result_node TEXT,
    outcome TEXT NOT NULL DEFAULT '',
    fee_earned TEXT NOT NULL DEFAULT '0',
    failure TEXT,
    failure_code TEXT,
    audit_rate INTEGER NOT NULL DEFAULT 0,
    result_after_audit INTEGER NOT NULL DEFAULT 0,
    is_audited INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (task_id, round)
);
CREATE INDEX IF NOT EXISTS node_tasks_step ON node_tasks (step);
CREATE TABLE IF NOT EXISTS result_files (
    task_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (task_id, round, idx)
);
CREATE TABLE IF NOT EXISTS pending_caps (
    task_id INTEGER PRIMARY KEY,
    cap TEXT NOT NULL,
    task_hash TEXT,
    audit_rate INTEGER NOT NULL DEFAULT 0,
    result_after_audit INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS paused_cards (
    card_key TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    paused_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS node_accounts (
    idx INTEGER PRIMARY KEY,
    gpu_name TEXT NOT NULL,
    vram_gb INTEGER NOT NULL,
    runtime TEXT NOT NULL,
    is_spare INTEGER NOT NULL DEFAULT 0,
    changed_at REAL NOT NULL
);
"""
# Columns renamed or added since a state directory may have been written (oldest first).
RENAMED_COLUMNS = {"deadline": "deadline_chain_s"}
ADDED_COLUMNS = {
    "failure": "TEXT", "started_chain_s": "REAL", "cap": "TEXT", "failure_code": "TEXT",
    "audit_rate": "INTEGER NOT NULL DEFAULT 0", "result_after_audit": "INTEGER NOT NULL DEFAULT 0",
    "is_audited": "INTEGER NOT NULL DEFAULT 0",
}  # fmt: skip
ADDED_PENDING_COLUMNS = {
    "task_hash": "TEXT", "audit_rate": "INTEGER NOT NULL DEFAULT 0",
    "result_after_audit": "INTEGER NOT NULL DEFAULT 0",
}  # fmt: skip
_BOOL_FIELDS = ("commitments_ready", "result_after_audit", "is_audited")


class PendingTask(NamedTuple):
    """What the farm keeps of a task from its TaskPending (and TaskSampled) until its rounds start: the cap
    its fee paid for, its hash (an audit's TaskStarted carries none), and its sampling."""

    cap: int
    task_hash: bytes | None = None
    audit_rate: int = 0
    result_after_audit: bool = False


_HEX_FIELDS = {"task_hash", "result", "nonce"}
_COLUMNS = [f.name for f in fields(NodeTask)]


# Result files up to this size in all are kept in the database, written with the row that names their
# result (one fsync); larger ones in files beside it (a temporary directory and three fsyncs).
INLINE_FILES_MAX_BYTES = 256 * 1024
_BIG_INT_FIELDS = {"fee_earned", "cap"}  # may not fit SQLite's 64-bit integers: stored as text


def _to_row(task: NodeTask) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in _COLUMNS:
        value = getattr(task, name)
        if name in _HEX_FIELDS and value is not None:
            value = value.hex()
        elif name in _BOOL_FIELDS:
            value = int(value)
        elif name in _BIG_INT_FIELDS and value is not None:
            value = str(value)
        elif isinstance(value, StrEnum):
            value = value.value
        row[name] = value
    return row


def _with(name: str, value: Any) -> NodeTask:
    """A placeholder row carrying one field, to reuse _to_row's encoding of that field."""
    return replace(NodeTask(0, 0, "", 0, b"", Step.DONE, 0.0), **{name: value})


def _from_row(row: sqlite3.Row) -> NodeTask:
    values = {name: row[name] for name in _COLUMNS}
    for name in _HEX_FIELDS:
        if values[name] is not None:
            values[name] = bytes.fromhex(values[name])
    values["step"] = Step(values["step"])
    values["outcome"] = Outcome(values["outcome"])
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    values["fee_earned"] = int(values["fee_earned"])
    if values["cap"] is not None:
        values["cap"] = int(values["cap"])
    if values["failure_code"] is not None:
        values["failure_code"] = FailureCode(values["failure_code"])
    return NodeTask(**values)


def _update(task_id: int, round_: int, unless_done: bool, changes: dict[str, Any]) -> tuple[str, list[Any]]:
    """The UPDATE of ``RoundStore.patch``: only the named fields, and not a row the chain ended."""
    unknown = set(changes) - set(_COLUMNS)
    if unknown:
        raise KeyError(f"not fields of a task row: {sorted(unknown)}")
    row = {name: _to_row(_with(name, value))[name] for name, value in changes.items()}
    assignments = ", ".join(f"{name} = ?" for name in row) + ", updated_at = ?"
    where = "task_id = ? AND round = ?" + (" AND step != ?" if unless_done else "")
    params = [*row.values(), time.time(), task_id, round_, *([Step.DONE.value] if unless_done else [])]
    return f"UPDATE node_tasks SET {assignments} WHERE {where}", params


class RoundStore:
    """SQLite (WAL, synchronous=FULL): a write has reached the disk when the call returns."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "results"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # re-entered by the writes of a ``transaction``
        self._db = open_durable(self.state_dir / "tasks.db", rows_by_name=True)
        _migrate(self._db)
        self._db.executescript(SCHEMA)
        self.node_accounts = AccountRegistry(self._db, self._lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes inside as one transaction, on disk (one fsync) when the block ends, or none of them
        if it raises: for the rows one page of chain events changes, whose cursor moves only after it.
        Other threads wait for the end; a transaction inside one is part of it."""
        with self._lock:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, task: NodeTask) -> bool:
        """Record a selection; False (and nothing changed) when this (task, round) is already known."""
        row = _to_row(task) | {"updated_at": time.time()}
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            cursor = self._db.execute(
                f"INSERT OR IGNORE INTO node_tasks ({names}) VALUES ({marks})", tuple(row.values())
            )
            return cursor.rowcount == 1

    def patch(self, task_id: int, round_: int, *, unless_done: bool = True, **changes: Any) -> bool:
        """Write only the named fields of one row; False when nothing was written.

        Two writers share a row: the task's step runner and the chain watch. Each writes only its own
        fields, so neither overwrites what the other learned; ``unless_done`` keeps a runner that finishes
        a step late from moving a row the chain already ended.
        """
        sql, params = _update(task_id, round_, unless_done, changes)
        with self._lock:
            return self._db.execute(sql, params).rowcount == 1

    def patched(
        self, task_id: int, round_: int, *, unless_done: bool = True, **changes: Any
    ) -> NodeTask | None:
        """``patch``, returning the row as written (None when nothing was), in the same statement."""
        sql, params = _update(task_id, round_, unless_done, changes)
        with self._lock:  # every row read, to the statement's end: committed before the lock is let go
            written = self._db.execute(sql + " RETURNING *", params).fetchall()
        return _from_row(written[0]) if written else None

    def get(self, task_id: int, round_: int) -> NodeTask | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM node_tasks WHERE task_id = ? AND round = ?", (task_id, round_)
            ).fetchone()
        return None if row is None else _from_row(row)

    def of_task(self, task_id: int) -> list[NodeTask]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM node_tasks WHERE task_id = ? ORDER BY round", (task_id,))
            return [_from_row(r) for r in rows.fetchall()]

    def unfinished(self) -> list[NodeTask]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM node_tasks WHERE step != ? ORDER BY task_id, round", (Step.DONE,)
            )
            return [_from_row(r) for r in rows.fetchall()]

    def unsettled(self) -> list[tuple[int, int, str]]:
        """(task, round, node) of the rows the chain has not settled: their events are still to come."""
        with self._lock:
            return self._db.execute(
                "SELECT task_id, round, node FROM node_tasks WHERE outcome = ''"
            ).fetchall()

    def busy_nodes(self) -> set[str]:
        """The accounts with an unfinished round."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT node FROM node_tasks WHERE step != ?", (Step.DONE,))
            return {node for (node,) in rows.fetchall()}

    def counts(self) -> TaskCounts:
        """Rows by step, finished rows by outcome, failed rows by failure code: the farm at a glance."""
        with self._lock:
            by_step = self._db.execute("SELECT step, COUNT(*) FROM node_tasks GROUP BY step").fetchall()
            by_outcome = self._db.execute(
                "SELECT outcome, COUNT(*) FROM node_tasks WHERE outcome != '' GROUP BY outcome"
            ).fetchall()
            by_failure = self._db.execute(
                "SELECT failure_code, COUNT(*) FROM node_tasks WHERE failure_code IS NOT NULL "
                "GROUP BY failure_code"
            ).fetchall()
            sampling = self._db.execute(
                "SELECT SUM(round = 0), SUM(round = 0 AND is_audited), "
                "SUM(round = 0 AND is_audited AND outcome = ?), SUM(round > 0) "
                "FROM node_tasks WHERE audit_rate > 0",
                (Outcome.SLASHED.value,),
            ).fetchone()
        return TaskCounts(
            by_step={Step(s): n for s, n in by_step},
            by_outcome={Outcome(o): n for o, n in by_outcome},
            by_failure={FailureCode(c): n for c, n in by_failure},
            by_sampling={kind: n for kind, n in zip(Sampling, sampling, strict=True) if n},
        )

    def earnings_wei(self) -> int:
        return sum(self.earnings_by_node().values())

    def earnings_by_node(self) -> dict[str, int]:
        """Fees each node earned (wei; stored as text, since a fee may not fit SQLite's 64-bit integers)."""
        with self._lock:
            rows = self._db.execute("SELECT node, fee_earned FROM node_tasks").fetchall()
        earned: dict[str, int] = {}
        for node, fee in rows:
            earned[node] = earned.get(node, 0) + int(fee)
        return earned

    def last_selected_chain_s(self) -> float | None:
        """When a farm node was last selected for a task: the latest TaskStarted block time (chain time)."""
        with self._lock:
            (latest,) = self._db.execute("SELECT MAX(started_chain_s) FROM node_tasks").fetchone()
        return latest

    # -- caps of tasks seen pending: what their fee paid for, until they start ----------------------------

    def follow_pending(self, event: TaskEvent) -> PendingTask | None:
        """Keep what a task's TaskPending and TaskSampled say until its rounds start; for a TaskStarted,
        what was kept. A full task's rounds start together, a sampled one's audit rounds together: the
        last one's event ends the wait, as does an abort or a draw that audits nothing (ChainWatch and,
        with round drivers, the fleet follow the chain through here)."""
        match event:
            case TaskPending():
                self.note_pending(event.task_id, event.cap, event.task_hash)
            case TaskSampled():
                self.note_sampled(event.task_id, event.audit_rate, event.result_after_audit)
            case TaskStarted():
                seen = self.pending(event.task_id)
                if event.round == NODES_PER_TASK - 1:
                    self.forget_pending(event.task_id)
                return seen
            case TaskAborted() | AuditDrawn(is_audited=False):
                self.forget_pending(event.task_id)  # no (more) rounds will start
        return None

    def note_pending(self, task_id: int, cap: int, task_hash: bytes | None = None) -> None:
        self.keep_pending(task_id, PendingTask(cap, task_hash))

    def note_sampled(self, task_id: int, audit_rate: int, result_after_audit: bool) -> None:
        """The TaskSampled that follows a task's TaskPending."""
        with self._lock:
            self._db.execute(
                "UPDATE pending_caps SET audit_rate = ?, result_after_audit = ? WHERE task_id = ?",
                (audit_rate, int(result_after_audit), task_id),
            )

    def keep_pending(self, task_id: int, pending: PendingTask) -> None:
        """A pending task as seen (a replayed page keeps the first)."""
        row = (task_id, str(pending.cap), None if pending.task_hash is None else pending.task_hash.hex(),
               pending.audit_rate, int(pending.result_after_audit))  # fmt: skip
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO pending_caps "
                "(task_id, cap, task_hash, audit_rate, result_after_audit) VALUES (?, ?, ?, ?, ?)",
                row,
            )

    def pending(self, task_id: int) -> PendingTask | None:
        with self._lock:
            row = self._db.execute(
                "SELECT cap, task_hash, audit_rate, result_after_audit FROM pending_caps WHERE task_id = ?",
                (task_id,),
            ).fetchone()
        if row is None:
            return None
        cap, task_hash, audit_rate, result_after_audit = row
        hash_bytes = None if task_hash is None else bytes.fromhex(task_hash)
        return PendingTask(int(cap), hash_bytes, audit_rate, bool(result_after_audit))

    def pending_cap(self, task_id: int) -> int | None:
        pending = self.pending(task_id)
        return None if pending is None else pending.cap

    def forget_pending(self, task_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending_caps WHERE task_id = ?", (task_id,))

    # -- result files: written before the commitment, read back for the upload ---------------------------

    def files_path(self, task_id: int, round_: int) -> Path:
        return self.files_dir / f"{task_id}-{round_}"

    def write_files(self, task_id: int, round_: int, files: list[bytes]) -> None:
        """A round's result files, replacing any a replay left (a crash between this write and the row's
        update). Small ones go in the database: inside a ``transaction`` with the row's update, both are
        on disk in one fsync, or neither."""
        folder = self.files_path(task_id, round_)
        if folder.exists():
            shutil.rmtree(folder)
        with self.transaction():
            self._db.execute("DELETE FROM result_files WHERE task_id = ? AND round = ?", (task_id, round_))
            if files and sum(map(len, files)) <= INLINE_FILES_MAX_BYTES:
                self._db.executemany(
                    "INSERT INTO result_files (task_id, round, idx, data) VALUES (?, ?, ?, ?)",
                    [(task_id, round_, index, data) for index, data in enumerate(files)],
                )
                return
        write_indexed_files(folder, files)

    def read_files(self, task_id: int, round_: int) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM result_files WHERE task_id = ? AND round = ? ORDER BY idx",
                (task_id, round_),
            ).fetchall()
        if rows:
            return [bytes(data) for (data,) in rows]
        return read_indexed_files(self.files_path(task_id, round_))

    # -- card models the guard paused: they stay paused across restarts until the operator lifts them ----

    def pause_card(self, card_key: bytes, reason: str) -> bool:
        """Record a paused card model; False when it was paused already (the first reason is kept)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO paused_cards (card_key, reason, paused_at) VALUES (?, ?, ?)",
                (card_key.hex(), reason, time.time()),
            )
            return cursor.rowcount == 1

    def resume_card(self, card_key: bytes) -> bool:
        """Lift a pause; False when the card model was not paused."""
        with self._lock:
            cursor = self._db.execute("DELETE FROM paused_cards WHERE card_key = ?", (card_key.hex(),))
            return cursor.rowcount == 1

    def paused_cards(self) -> dict[bytes, str]:
        """Paused card model keys, each with the reason it was paused for."""
        with self._lock:
            rows = self._db.execute("SELECT card_key, reason FROM paused_cards ORDER BY paused_at").fetchall()
        return {bytes.fromhex(key): reason for key, reason in rows}


class AccountRow(NamedTuple):
    """A node account the farm derived: its key's index, its card model, and whether it is spare (paused
    on chain because the farm has fewer places of its card model than accounts)."""

    index: int
    card: CardModel
    is_spare: bool


class AccountRegistry:
    """Which derivation index stands for which card model, kept in ``tasks.db``: a machine that joins later
    adds accounts at the next indices, and a restart finds every account under the card it joined with,
    whatever order the machines came up in."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self._db, self._lock = db, lock

    def rows(self) -> list[AccountRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, gpu_name, vram_gb, runtime, is_spare FROM node_accounts ORDER BY idx"
            ).fetchall()
        return [AccountRow(idx, CardModel(name, vram, runtime), bool(spare))
                for idx, name, vram, runtime, spare in rows]  # fmt: skip

    def add(self, accounts: Iterable[tuple[int, CardModel]]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany(
                "INSERT INTO node_accounts (idx, gpu_name, vram_gb, runtime, changed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(index, *card.join_args, now) for index, card in accounts],
            )

    def set_spare(self, indices: Iterable[int], is_spare: bool) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany(
                "UPDATE node_accounts SET is_spare = ?, changed_at = ? WHERE idx = ?",
                [(int(is_spare), now, index) for index in indices],
            )


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a state directory written by an earlier version to the current columns (nothing is lost)."""
    pending_columns = {row[1] for row in db.execute("PRAGMA table_info(pending_caps)")}
    for name, kind in ADDED_PENDING_COLUMNS.items():
        if pending_columns and name not in pending_columns:
            db.execute(f"ALTER TABLE pending_caps ADD COLUMN {name} {kind}")
    columns = {row[1] for row in db.execute("PRAGMA table_info(node_tasks)")}
    if not columns:
        return  # a new state directory: SCHEMA creates everything
    for old, new in RENAMED_COLUMNS.items():
        if old in columns and new not in columns:
            db.execute(f"ALTER TABLE node_tasks RENAME COLUMN {old} TO {new}")
    for name, kind in ADDED_COLUMNS.items():
        if name not in columns:
            db.execute(f"ALTER TABLE node_tasks ADD COLUMN {name} {kind}")
