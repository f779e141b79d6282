"""Relay throughput on loopback: signed requests per second, by signature backend, database and replicas.

    python benchmarks/relay_throughput.py            # every table; records the results
    python benchmarks/relay_throughput.py --quick    # fewer requests per row (a smoke run)
    python benchmarks/relay_throughput.py --uploads --before /tmp/before   # 8 MiB uploads, two checkouts

Each relay runs as its own process (``python -m network.relay``, as deployed), on SQLite or on a
PostgreSQL server started here from Debian's binaries, following a real anvil. Its tables are filled
directly, so the measurement is the request path, not the chain. Tables:
- small signed GET (an argument download, the request the relay serves most): the pure-Python and the C
  (coincurve) secp256k1 backends, SQLite and PostgreSQL, 1 and 8 requests in flight, one relay and two
  replicas on one database (requests alternating between them). The requests are signed beforehand, so
  the figure is the relay's; the relays' CPU per request is measured from /proc.
- follower takeover: two replicas on PostgreSQL, the follower SIGKILLed, seconds until the standby
  follows (bounded by ``--poll-interval-s``, 1 s by default).
- every operation through the cluster's RelayClient (signing included), small and 10 MB files.
- ``--uploads``: 8 MiB argument uploads, this checkout's relay and another's (benchmarks/relay_uploads.py);
  the other tables are kept as recorded.
Results: benchmarks/results/relay_throughput.{json,md}, with the machine's load while measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.relay_clients import client_rows  # noqa: E402
from benchmarks.relay_load import fill, load_1m, signed_gets  # noqa: E402
from benchmarks.relay_report import write_report  # noqa: E402
from benchmarks.relay_uploads import upload_rows  # noqa: E402
from cluster.chain.anvil import Anvil  # noqa: E402
from network.relay.local_postgres import LocalPostgres, PostgresUnavailable  # noqa: E402
from network.relay.process import RelayProcess  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BACKENDS = {"coincurve": {}, "native": {"ECC_BACKEND_CLASS": "eth_keys.backends.NativeECCBackend"}}
TASK_ADDRESS = "0x" + "11" * 20  # no contract there: the relay follows an empty log


class Bench:
    """The chain, the PostgreSQL server (when this machine has one) and a fresh database per row."""

    def __init__(self, anvil: Anvil, postgres: LocalPostgres | None, scale: float):
        self.anvil, self.postgres, self.scale = anvil, postgres, scale
        self._databases = 0

    @property
    def databases(self) -> list[str]:
        return ["sqlite", "postgresql"] if self.postgres is not None else ["sqlite"]

    def database_url(self, database: str, data_dir: Path) -> str:
        if database == "sqlite":
            return f"sqlite:///{data_dir / 'relay.db'}"
        assert self.postgres is not None
        self._databases += 1
        return self.postgres.create_database(f"bench_{os.getpid()}_{self._databases}")

    @contextlib.contextmanager
    def relays(
        self,
        data_dir: Path,
        db_url: str,
        count: int,
        env: dict[str, str] | None = None,
        poll_s: float = 1.0,
        code_dir: Path | None = None,
    ) -> Iterator[list[RelayProcess]]:
        started: list[RelayProcess] = []
        try:
            for n in range(count):
                relay = RelayProcess(
                    rpc_url=self.anvil.rpc_url, task_address=TASK_ADDRESS, data_dir=data_dir,
                    database_url=db_url, poll_interval_s=poll_s, env=env, log_name=f"relay{n}.log",
                    code_dir=code_dir,
                )  # fmt: skip
                started.append(relay.start())
            yield started
        finally:
            for relay in started:
                relay.stop()


def small_get_row(bench: Bench, backend: str, database: str, in_flight: int, replicas: int) -> dict[str, Any]:
    requests = int((3000 if backend == "coincurve" else 150) * bench.scale)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        db_url = bench.database_url(database, data_dir)
        task_ids = range(100)
        fill(db_url, data_dir, task_ids, args_size=1024)
        load_before = load_1m()
        with bench.relays(data_dir, db_url, replicas, BACKENDS[backend]) as relays:
            assert relays[0].status()["signing_backend"] == backend, "the relay signs with another backend"
            result = asyncio.run(
                signed_gets(
                    [r.url for r in relays], task_ids, requests=requests, in_flight=in_flight,
                    relay_pids=[r.pid for r in relays],
                )
            )  # fmt: skip
    row = {
        "backend": backend, "database": database, "replicas": replicas, "in_flight": in_flight,
        "requests": requests, "per_s": round(result.per_s, 1),
        "relay_cpu_ms_per_request": round(result.relay_cpu_ms_per_request, 3),
        "load_1m_before": load_before, "load_1m_after": load_1m(),
    }  # fmt: skip
    print("small GET", row, flush=True)
    return row


def small_get_rows(bench: Bench) -> list[dict[str, Any]]:
    shapes = [(1, 1), (8, 1), (8, 2)]  # (in flight, replicas)
    return [
        small_get_row(bench, backend, database, in_flight, replicas)
        for backend in BACKENDS
        for database in bench.databases
        for in_flight, replicas in shapes
    ]


def takeover_rows(bench: Bench, trials: int = 3) -> list[dict[str, Any]]:
    """Seconds from SIGKILL of the following replica to the standby following, at the default poll."""
    if bench.postgres is None:
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        db_url = bench.database_url("postgresql", data_dir)
        with bench.relays(data_dir, db_url, 2) as relays:
            for trial in range(trials):
                leader, standby = wait_for_one_follower(relays)
                leader.kill()
                killed = time.monotonic()
                while not standby.status()["following"]:
                    time.sleep(0.01)
                rows.append({"trial": trial, "takeover_s": round(time.monotonic() - killed, 2)})
                print("takeover", rows[-1], flush=True)
                leader.start()  # back, as the standby
    return rows


def wait_for_one_follower(relays: list[RelayProcess]) -> tuple[RelayProcess, RelayProcess]:
    while True:
        following = [r for r in relays if r.status()["following"]]
        if following:
            assert len(following) == 1, "two replicas follow the chain at once"
            leader = following[0]
            return leader, next(r for r in relays if r is not leader)
        time.sleep(0.05)


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_1m_at_start": load_1m(),
    }  # fmt: skip


def record_uploads(options: argparse.Namespace) -> None:
    """The 8 MiB uploads table, measured now, into the recorded results (the other tables unchanged)."""
    json_path = options.out.with_suffix(".json")
    results = json.loads(json_path.read_text())
    codes: dict[str, Path | None] = {"after (this checkout)": None}
    if options.before is not None:
        codes = {options.before_label: options.before.resolve(), **codes}
    with Anvil() as anvil:
        results["args_upload_8mib"] = {
            "machine": machine(),
            "rows": upload_rows(Bench(anvil, None, 1.0), codes),
        }
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, options.out.with_suffix(".md"))
    print(f"wrote {options.out}.json and .md")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests per row")
    parser.add_argument("--out", type=Path, default=RESULTS / "relay_throughput")
    parser.add_argument("--uploads", action="store_true", help="only the 8 MiB argument uploads table")
    parser.add_argument("--before", type=Path, help="with --uploads: another checkout's relay to compare")
    parser.add_argument("--before-label", default="before", help="its name in the table")
    options = parser.parse_args(argv)
    if options.uploads:
        return record_uploads(options)
    results: dict[str, Any] = {"machine": machine()}
    with contextlib.ExitStack() as stack:
        anvil = stack.enter_context(Anvil())
        try:
            postgres: LocalPostgres | None = stack.enter_context(LocalPostgres())
        except PostgresUnavailable as exc:
            print(f"PostgreSQL rows skipped: {exc}", flush=True)
            postgres = None
        bench = Bench(anvil, postgres, 0.1 if options.quick else 1.0)
        results["small_get"] = small_get_rows(bench)
        results["takeover"] = takeover_rows(bench)
        results["client"] = client_rows(bench)
    results["machine"]["load_1m_at_end"] = load_1m()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, options.out.with_suffix(".md"))
    print(f"wrote {options.out}.json and .md")


if __name__ == "__main__":
    main()
