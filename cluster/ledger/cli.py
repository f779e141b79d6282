"""``python -m cluster ledger``: its arguments, and the ledger read from a stopped farm's state directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.cli_options import add_ray_address
from cluster.ledger.model import LedgerReport
from cluster.ledger.report import render_csv, render_table

LEDGER_FILE = "coordinator/ledger.db"  # under the farm's state_dir (the coordinator's own directory)


def add_parser(commands: argparse._SubParsersAction) -> None:
    ledger = commands.add_parser(
        "ledger",
        help="what the farm's accounts earned and paid, per day and card model",
        description="The farm's ledger, per day (UTC) and card model (--accounts: per node account): fees "
        "and compensations earned, gas paid, stakes slashed, top-ups from the operator, payouts, stakes "
        "paid and returned; from the farm's own receipts and the chain's events, with the totals. With "
        "--state-dir it reads a stopped farm's state directory; else it asks the running coordinator.",
    )
    ledger.add_argument("--csv", action="store_true", help="CSV with exact CNX amounts, for spreadsheets")
    ledger.add_argument("--accounts", action="store_true", help="a row per node account, not per card model")
    ledger.add_argument("--since", default="", metavar="YYYY-MM-DD", help="only the days from this one on")
    ledger.add_argument(
        "--state-dir", type=Path, help="the farm's state_dir, when its coordinator is stopped"
    )
    add_ray_address(ledger)


def read_offline(state_dir: Path, *, by_account: bool, since_day: str) -> LedgerReport | None:
    from cluster.ledger.store import LedgerStore

    path = state_dir.expanduser().resolve() / LEDGER_FILE
    if not path.exists():
        print(f"no ledger at {path}: is this the farm's state_dir?", file=sys.stderr)
        return None
    store = LedgerStore(path)
    try:
        return store.report(by_account=by_account, since_day=since_day)
    finally:
        store.close()


def print_report(report: LedgerReport, *, as_csv: bool) -> None:
    print(render_csv(report) if as_csv else render_table(report), end="" if as_csv else "\n")
