"""One way to open the SQLite files that must survive a crash (journal, cursors, task rows, requests).

WAL with synchronous=FULL: a committed write is on disk when the call returns, so a transaction that
depends on it (a broadcast, a commitment) can go out safely; autocommit (isolation_level=None) so each
statement is its own transaction unless a caller opens one. Shared between threads behind a lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: str | Path, schema: str = "", *, rows_by_name: bool = False) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if rows_by_name:
        db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    if schema:
        db.executescript(schema)
    return db
