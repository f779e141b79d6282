"""A throwaway PostgreSQL server from the machine's own binaries (Debian's ``postgresql`` package), for the
relay's tests, its benchmark and trying replicas on one machine: the PostgreSQL counterpart of
``cluster.chain.anvil``. A real deployment points ``--database-url`` at a managed server instead.

PostgreSQL refuses to run as root, so under root the data folder is handed to the ``postgres`` user and
the server runs as it (``runuser``). Durability settings are off: this server lives as long as a test run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from cluster import envs
from cluster.chain.anvil import free_port

SERVICE_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or no way to run them)."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's versioned folder, or the PATH."""
    env = envs.POSTGRES_BIN.get()
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install Debian's `postgresql` package "
        "or set HELIUM_POSTGRES_BIN"
    )


class LocalPostgres:
    """``with LocalPostgres() as pg: url = pg.create_database("relay_1")``."""

    def __init__(self, root: Path | None = None, port: int | None = None):
        self.bin_dir = find_bin_dir()
        self._owns_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="helium-pg-"))
        self.port = port or free_port()
        self._as_root = os.geteuid() == 0
        self._started = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for one database of this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            shutil.chown(self.root, SERVICE_USER, SERVICE_USER)
        if not self.data_dir.exists():
            self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "--no-sync")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log_file = str(self.root / "log")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", log_file, "-w", "start")
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            self._started = False
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and underscores only")
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log_tail = ""
            if (self.root / "log").exists():
                log_tail = (self.root / "log").read_text()[-2000:]
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n{log_tail}")

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
