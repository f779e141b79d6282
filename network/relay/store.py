"""The relay's metadata: what it learned of each task from the chain, and what was uploaded for it.

SQLAlchemy Core over SQLite by default (one file beside the data) or PostgreSQL by URL, which is what
several replicas share. Every write is one short transaction. The follower applies a page of chain events
and moves its cursor in one transaction that first checks the cursor is where it read from
(``chain_page``), so a page is applied exactly once however many followers race on it. Uploads are
claimed the same way: the first writer of a task's results wins and the others change nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from cluster.chain.contracts import Validation
from network.relay import schema
from network.relay.chain_facts import ChainFacts
from network.relay.schema import Counter, TaskState

log = logging.getLogger(__name__)
T = TypeVar("T")

# Held (per transaction) while a replica creates the tables: two replicas starting at once on one
# PostgreSQL database would otherwise both try to create them.
SCHEMA_LOCK_KEY = 0x68656C69756D01  # "helium" + 1


def _add_missing_columns(conn: Any) -> None:
    """Columns added after a database was created (create_all makes tables, never columns): nullable,
    so rows written before read as unknown."""
    have = {c["name"] for c in inspect(conn).get_columns(schema.tasks.name)}
    for column in schema.tasks.columns:
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {schema.tasks.name} ADD COLUMN {column.name} {kind}"))


class CursorMoved(RuntimeError):
    """The follower's cursor is not where this page began: another follower applied it first."""


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
    cap: int | None = None
    args_uploaded_at: float | None = None  # None: not uploaded, or stored before the relay kept the time
    validation: Validation = Validation.FULL
    commitment: bytes | None = None  # round 0's, of a sampled task
    audited: bool = False  # a sampled task's audit started: its rounds 1 and 2 are selected
    early_result: bytes | None = None  # the result the first node's early files were checked against
    num_early_files: int = 0

    @property
    def readers_of_args(self) -> set[str]:
        return {self.creator, *self.selected_nodes.values()}

    @property
    def is_sampled(self) -> bool:
        return self.validation is not Validation.FULL

    @property
    def readers_are_final(self) -> bool:
        """No node can join the readers of the arguments any more: a running sampled task gains two when
        its audit starts, so one that asks before the relay saw that is answered "not yet", not refused."""
        if self.state is TaskState.PENDING:
            return False
        return not (self.is_sampled and self.state is TaskState.RUNNING and not self.audited)


def _record(row: Any) -> TaskRecord:
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
        cap=row.cap,
        args_uploaded_at=row.args_uploaded_at,
        validation=Validation(row.validation or 0),
        commitment=None if row.commitment is None else bytes.fromhex(row.commitment[2:]),
        audited=bool(row.audited),
        early_result=None if row.early_result is None else bytes.fromhex(row.early_result),
        num_early_files=row.num_early_files or 0,
    )


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _durable(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the follower's writes
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    # pre-ping: a replica outlives a database restart without answering one request per stale connection
    return create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)


# The reads of the request path, each a function of a connection: run in place (``RelayStore.get``: the
# follower, tools) or without holding the event loop (``RelayStore.get_async``: the endpoints).


def _task(conn: Connection, task_id: int) -> TaskRecord | None:
    row = conn.execute(select(schema.tasks).where(schema.tasks.c.task_id == task_id)).first()
    return None if row is None else _record(row)


def _cursor(conn: Connection, name: str) -> int | None:
    return conn.scalar(select(schema.cursors.c.next_block).where(schema.cursors.c.name == name))


def _counters(conn: Connection) -> dict[Counter, int]:
    return {Counter(name): value for name, value in conn.execute(select(schema.counters))}


def _nodes_page(conn: Connection, offset: int, limit: int) -> tuple[int, list[Any]]:
    nodes = schema.nodes
    total = conn.scalar(select(func.count()).select_from(nodes)) or 0
    query = select(nodes).order_by(nodes.c.first_block, nodes.c.first_log).offset(offset).limit(limit)
    return total, list(conn.execute(query))


class RelayStore:
    def __init__(self, url: str):
        self.engine = open_engine(url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        # Reads are single statements: without a transaction around them PostgreSQL saves the BEGIN and
        # ROLLBACK round trips on every request (SQLite has none to save).
        self._reads = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.is_postgres else self.engine
        )
        # The endpoints read PostgreSQL through psycopg's async driver: a database a few milliseconds away
        # kept the event loop, and every other request, waiting for each round trip. SQLite is a local file:
        # read in place, as a hop to a thread would cost more than the read. No pre-ping (a round trip per
        # request): a read that meets a connection the database dropped is tried once more (_read_async).
        self._async_engine = (
            create_async_engine(url, pool_size=16, max_overflow=16) if self.is_postgres else None
        )
        self._async_reads = (
            None
            if self._async_engine is None
            else self._async_engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK_KEY)))
            schema.metadata.create_all(conn)
            _add_missing_columns(conn)
            known = set(conn.scalars(select(schema.counters.c.name)))
            missing = [{"name": c.value, "value": 0} for c in Counter if c.value not in known]
            if missing:
                conn.execute(insert(schema.counters), missing)

    def close(self) -> None:
        self.engine.dispose()

    async def aclose(self) -> None:
        """``close``, and the async reads' connections (in the event loop that opened them)."""
        if self._async_engine is not None:
            await self._async_engine.dispose()
        self.close()

    # -- chain facts --------------------------------------------------------------------------------------

    @contextmanager
    def chain_page(self, cursor: str, first: int, next_block: int) -> Iterator[ChainFacts]:
        """One transaction for the events of blocks ``first .. next_block - 1`` and the cursor move.

        Raises CursorMoved (and writes nothing) unless the cursor stood at ``first`` (or was never set),
        so two followers can never both apply a page.
        """
        cursors = schema.cursors
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(cursors)
                .where(and_(cursors.c.name == cursor, cursors.c.next_block == first))
                .values(next_block=next_block)
            ).rowcount
            if moved != 1:
                stored = conn.scalar(select(cursors.c.next_block).where(cursors.c.name == cursor))
                if stored is not None:
                    raise CursorMoved(f"cursor {cursor!r} is at block {stored}, not {first}")
                conn.execute(insert(cursors).values(name=cursor, next_block=next_block))
            yield ChainFacts(conn)

    @contextmanager
    def chain_facts(self) -> Iterator[ChainFacts]:
        """Facts written without a cursor (tests, benchmarks and the saw_* shortcuts below)."""
        with self.engine.begin() as conn:
            yield ChainFacts(conn)

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

    # -- reads (every request) ----------------------------------------------------------------------------

    def get(self, task_id: int) -> TaskRecord | None:
        return self._read(_task, task_id)

    async def get_async(self, task_id: int) -> TaskRecord | None:
        return await self._read_async(_task, task_id)

    def get_cursor(self, name: str) -> int | None:
        return self._read(_cursor, name)

    async def get_cursor_async(self, name: str) -> int | None:
        return await self._read_async(_cursor, name)

    def counters(self) -> dict[Counter, int]:
        return self._read(_counters)

    async def counters_async(self) -> dict[Counter, int]:
        return await self._read_async(_counters)

    def nodes_page(self, offset: int, limit: int) -> tuple[int, list[Any]]:
        """The number of nodes ever joined, and up to ``limit`` of them from ``offset`` in join order."""
        return self._read(_nodes_page, offset, limit, is_one_statement=False)

    async def nodes_page_async(self, offset: int, limit: int) -> tuple[int, list[Any]]:
        return await self._read_async(_nodes_page, offset, limit, is_one_statement=False)

    def _read(self, query: Callable[..., T], *args: Any, is_one_statement: bool = True) -> T:
        # One statement needs no transaction around it: PostgreSQL saves the BEGIN and ROLLBACK round trips.
        with (self._reads if is_one_statement else self.engine).connect() as conn:
            return query(conn, *args)

    async def _read_async(self, query: Callable[..., T], *args: Any, is_one_statement: bool = True) -> T:
        if self._async_engine is None or self._async_reads is None:
            return self._read(query, *args, is_one_statement=is_one_statement)
        engine = self._async_reads if is_one_statement else self._async_engine
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(query, *args)  # the same code, its waits handed to the loop
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # The database dropped the connection (a restart): the pool has let go of all of them. A read is
        # safe to repeat, on a new connection.
        async with engine.connect() as conn:
            return await conn.run_sync(query, *args)

    # -- uploads ------------------------------------------------------------------------------------------

    def mark_args_uploaded(self, task_id: int, at: float | None = None) -> float:
        """Records the arguments stored at ``at`` (now by default); returns when they were first stored (a
        racing or repeated upload keeps the first time, which the relay's receipt states)."""
        tasks = schema.tasks
        first = func.coalesce(tasks.c.args_uploaded_at, time.time() if at is None else at)
        with self.engine.begin() as conn:
            stored = {"args_uploaded": True, "args_uploaded_at": first}
            done = conn.execute(update(tasks).where(tasks.c.task_id == task_id).values(**stored))
            if done.rowcount == 0:
                raise KeyError(f"task {task_id} was not seen on chain")
            return float(conn.scalar(select(tasks.c.args_uploaded_at).where(tasks.c.task_id == task_id)))

    def mark_results_uploaded(self, task_id: int, num_files: int) -> bool:
        """Record the results once: False when they were already recorded (another upload won)."""
        tasks = schema.tasks
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(tasks)
                .where(and_(tasks.c.task_id == task_id, tasks.c.num_result_files == 0))
                .values(num_result_files=num_files)
            ).rowcount
            known = claimed or conn.scalar(select(tasks.c.task_id).where(tasks.c.task_id == task_id))
            if known is None:
                raise KeyError(f"task {task_id} was not seen on chain")
        return claimed == 1

    def mark_early_results_uploaded(self, task_id: int, result: bytes, num_files: int) -> bool:
        """Record a sampled task's early files once, with the result they were checked against: False
        when a set was already recorded (a retry, or a racing replica: the commitment binds one result)."""
        tasks = schema.tasks
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(tasks)
                .where(tasks.c.task_id == task_id, func.coalesce(tasks.c.num_early_files, 0) == 0)
                .values(num_early_files=num_files, early_result=result.hex())
            ).rowcount
        return claimed == 1

    # -- retention ----------------------------------------------------------------------------------------

    def ended_before(self, cutoff: float, limit: int = 500) -> list[int]:
        with self.engine.connect() as conn:
            query = select(schema.tasks.c.task_id).where(schema.tasks.c.ended_at < cutoff).limit(limit)
            return list(conn.scalars(query))

    def delete(self, task_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schema.tasks).where(schema.tasks.c.task_id == task_id))
