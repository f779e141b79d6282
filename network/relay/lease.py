"""Which replica follows the chain: a lock held for as long as its holder lives.

On PostgreSQL a session advisory lock, held on one connection kept open for it: PostgreSQL drops it the
moment that connection closes, so a replica that dies (even by SIGKILL) hands the lease over at once and
a standby takes it at its next try. On SQLite (replicas on one machine) an exclusive ``flock`` on a file
beside the database, which the kernel drops with the process.

The lease saves work; it is not what keeps the data right. A follower that lost its lease without knowing
(a network partition) still cannot apply a page twice: ``RelayStore.chain_page`` checks the cursor.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
FOLLOWER_LOCK_KEY = 0x68656C69756D02  # "helium" + 2: the advisory lock of the chain follower


class FollowerLease(Protocol):
    def try_acquire(self) -> bool:
        """Take the lease if it is free; True while this process holds it."""
        ...

    def release(self) -> None: ...


class PostgresLease:
    def __init__(self, engine: Engine, key: int = FOLLOWER_LOCK_KEY):
        self.engine = engine
        self.key = key
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        try:
            if self._conn is not None:
                self._conn.execute(text("SELECT 1"))  # still connected means still held
                return True
            conn = self.engine.connect()
            if conn.scalar(select(func.pg_try_advisory_lock(self.key))):
                conn.commit()  # keep the lock's connection out of an open transaction
                self._conn = conn
                return True
            conn.rollback()
            conn.close()
        except SQLAlchemyError as exc:
            log.warning("[relay] follower lease lost or unreachable: %s", exc)
            self._drop()
        return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.scalar(select(func.pg_advisory_unlock(self.key)))
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._conn.invalidate()  # never back to the pool: its session may still hold the lock
                self._conn.close()
        self._conn = None


class FileLease:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def follower_lease(engine: Engine) -> FollowerLease:
    """The lease that fits the store's database."""
    if engine.dialect.name == "postgresql":
        return PostgresLease(engine)
    database = make_url(str(engine.url)).database
    if not database or database == ":memory:":
        raise ValueError("replicas need a database they share: a SQLite file or PostgreSQL")
    return FileLease(Path(database + ".follower.lock"))
