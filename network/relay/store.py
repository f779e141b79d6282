"""The relay's metadata: what it learned of each task from the chain, and what was uploaded for it.

SQLAlchemy over SQLite by default (one file beside the data), PostgreSQL by URL. Every write is one
short transaction; chain events are applied idempotently, so replaying a page of events changes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, Text, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger(__name__)


class TaskState(StrEnum):
    PENDING = "pending"  # created, waiting in the queue
    RUNNING = "running"  # nodes selected
    SUCCEEDED = "succeeded"  # a validated result is on chain
    ABORTED = "aborted"


class _Base(DeclarativeBase):
    pass


class _TaskRow(_Base):
    __tablename__ = "relay_tasks"
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task_type: Mapped[int] = mapped_column(Integer)
    creator: Mapped[str] = mapped_column(String(42))
    task_hash: Mapped[str] = mapped_column(String(66))
    state: Mapped[str] = mapped_column(String(16))
    selected_nodes: Mapped[str] = mapped_column(Text, default="{}")  # JSON {round: address}
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # hex of the on-chain result bytes
    result_node: Mapped[str | None] = mapped_column(String(42), nullable=True)
    abort_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    args_uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    num_result_files: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)


class _CursorRow(_Base):
    __tablename__ = "relay_cursor"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_block: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    task_id: int
    task_type: int
    creator: str
    task_hash: bytes
    state: TaskState
    selected_nodes: dict[int, str]
    result: bytes | None
    result_node: str | None
    abort_reason: str | None
    args_uploaded: bool
    num_result_files: int
    ended_at: float | None

    @property
    def readers_of_args(self) -> set[str]:
        return {self.creator, *self.selected_nodes.values()}


def _record(row: _TaskRow) -> TaskRecord:
    return TaskRecord(
        task_id=row.task_id,
        task_type=row.task_type,
        creator=row.creator,
        task_hash=bytes.fromhex(row.task_hash[2:]),
        state=TaskState(row.state),
        selected_nodes={int(k): v for k, v in json.loads(row.selected_nodes).items()},
        result=None if row.result is None else bytes.fromhex(row.result),
        result_node=row.result_node,
        abort_reason=row.abort_reason,
        args_uploaded=row.args_uploaded,
        num_result_files=row.num_result_files,
        ended_at=row.ended_at,
    )


class RelayStore:
    def __init__(self, url: str):
        connect_args = {"check_same_thread": False} if url.startswith("sqlite") else {}
        self.engine = create_engine(url, connect_args=connect_args)
        _Base.metadata.create_all(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # -- chain facts (idempotent) -------------------------------------------------------------------------

    @contextmanager
    def chain_facts(self) -> Iterator[ChainFacts]:
        """One transaction for a page of events: readers never see a task half-selected."""
        with self._session.begin() as session:
            yield ChainFacts(session)

    def saw_task(self, task_id: int, task_type: int, creator: str, task_hash: bytes) -> None:
        with self.chain_facts() as facts:
            facts.saw_task(task_id, task_type, creator, task_hash)

    def saw_selection(self, task_id: int, round_: int, node: str) -> None:
        with self.chain_facts() as facts:
            facts.saw_selection(task_id, round_, node)

    def saw_success(self, task_id: int, result: bytes, result_node: str, at: float | None = None) -> None:
        with self.chain_facts() as facts:
            facts.saw_success(task_id, result, result_node, at)

    def saw_abort(self, task_id: int, reason: str, at: float | None = None) -> None:
        with self.chain_facts() as facts:
            facts.saw_abort(task_id, reason, at)

    # -- uploads ------------------------------------------------------------------------------------------

    def mark_args_uploaded(self, task_id: int) -> None:
        with self._session.begin() as session:
            self._row(session, task_id).args_uploaded = True

    def mark_results_uploaded(self, task_id: int, num_files: int) -> None:
        with self._session.begin() as session:
            self._row(session, task_id).num_result_files = num_files

    def get(self, task_id: int) -> TaskRecord | None:
        with self._session() as session:
            row = session.get(_TaskRow, task_id)
            return None if row is None else _record(row)

    # -- retention ----------------------------------------------------------------------------------------

    def ended_before(self, cutoff: float, limit: int = 500) -> list[int]:
        with self._session() as session:
            query = select(_TaskRow.task_id).where(_TaskRow.ended_at < cutoff).limit(limit)
            return list(session.scalars(query))

    def delete(self, task_id: int) -> None:
        with self._session.begin() as session:
            row = session.get(_TaskRow, task_id)
            if row is not None:
                session.delete(row)

    # -- the chain cursor (the EventReader's cursor store) ------------------------------------------------

    def get_cursor(self, name: str) -> int | None:
        with self._session() as session:
            row = session.get(_CursorRow, name)
            return None if row is None else row.next_block

    def set_cursor(self, name: str, next_block: int) -> None:
        with self._session.begin() as session:
            row = session.get(_CursorRow, name)
            if row is None:
                session.add(_CursorRow(name=name, next_block=next_block))
            else:
                row.next_block = next_block

    @staticmethod
    def _row(session: Session, task_id: int) -> _TaskRow:
        row = session.get(_TaskRow, task_id)
        if row is None:
            raise KeyError(f"task {task_id} was not seen on chain")
        return row


class ChainFacts:
    """What the chain said, written inside one session (see ``RelayStore.chain_facts``).

    Facts about a task the relay never saw (created before its start block) are skipped, not raised:
    one such event must not undo the rest of its page. (No SAVEPOINTs: with pysqlite, releasing the
    outermost savepoint commits, which would split the page into one transaction per event.)
    """

    def __init__(self, session: Session):
        self.session = session

    def _known(self, task_id: int) -> _TaskRow | None:
        row = self.session.get(_TaskRow, task_id)
        if row is None:
            log.warning("[relay] event for a task never seen skipped task_id=%d", task_id)
        return row

    def saw_task(self, task_id: int, task_type: int, creator: str, task_hash: bytes) -> None:
        """A task exists on chain. A replay of the same fact changes nothing."""
        if self.session.get(_TaskRow, task_id) is None:
            self.session.add(
                _TaskRow(
                    task_id=task_id,
                    task_type=task_type,
                    creator=creator,
                    task_hash="0x" + task_hash.hex(),
                    state=TaskState.PENDING.value,
                )
            )
            self.session.flush()

    def saw_selection(self, task_id: int, round_: int, node: str) -> None:
        row = self._known(task_id)
        if row is None:
            return
        nodes = json.loads(row.selected_nodes)
        nodes[str(round_)] = node
        row.selected_nodes = json.dumps(nodes, sort_keys=True)
        if row.state == TaskState.PENDING.value:
            row.state = TaskState.RUNNING.value

    def saw_success(self, task_id: int, result: bytes, result_node: str, at: float | None = None) -> None:
        row = self._known(task_id)
        if row is None:
            return
        row.state = TaskState.SUCCEEDED.value
        row.result, row.result_node = result.hex(), result_node
        row.ended_at = row.ended_at or (time.time() if at is None else at)

    def saw_abort(self, task_id: int, reason: str, at: float | None = None) -> None:
        row = self.session.get(_TaskRow, task_id)
        if row is None:  # aborted before the relay saw it (e.g. evicted from the queue): nothing to keep
            return
        if row.state != TaskState.SUCCEEDED.value:
            row.state, row.abort_reason = TaskState.ABORTED.value, reason
        row.ended_at = row.ended_at or (time.time() if at is None else at)
