"""``python -m cluster payout [--dry-run]`` and ``python -m cluster retire (--card KEY | --all)``: the
operator's money of a running farm, asked of its coordinator actor. Light to import: ``--help`` answers
without a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cluster.cli_options import add_ray_address

COMMANDS = ("payout", "retire")


def add_parsers(commands: Any) -> None:
    payout = commands.add_parser(
        "payout",
        help="sweep the node accounts' earnings to the payout address",
        description="Sweep what every active node account holds above its gas reserve, and what the "
        "contracts hold for it after a refused payment (credits), to network.operator.payout_address, "
        "all accounts at once. Each sweep is sent once, even across a kill and a rerun (the sender's "
        "journal).",
    )
    payout.add_argument("--dry-run", action="store_true", help="say what would be swept; send nothing")
    add_ray_address(payout)
    retire = commands.add_parser(
        "retire",
        help="pause node accounts, let their tasks finish, quit them and sweep everything",
        description="Retire node accounts: each is paused (a running task goes on to its end), quit for "
        "its stake once its task is over, and everything it holds is swept to "
        "network.operator.payout_address. A restarted farm carries on and never joins them again; "
        "`python -m cluster status` shows the progress. (Accounts are chosen by card model: a node "
        "account is a task place of a card model, not of a machine.)",
    )
    which = retire.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--card", metavar="KEY", help="the card model's key, or a prefix such as its 8 hex digits"
    )
    which.add_argument("--all", action="store_true", help="every node account of the farm")
    add_ray_address(retire)


def run(options: argparse.Namespace, actor: Any) -> int:
    import ray

    try:
        if options.command == "payout":
            from cluster.status.render import render_payout

            report = ray.get(actor.payout.remote(is_dry_run=options.dry_run))
            print(render_payout(report))
            return 1 if report.errors else 0
        retiring = ray.get(actor.retire.remote(None if options.all else options.card))
    except ray.exceptions.RayTaskError as exc:
        print(f"not done: {exc.cause}", file=sys.stderr)
        return 1
    print(
        f"retiring {len(retiring)} more node account(s): paused now, quit once their tasks end, then "
        "swept to the payout address; `python -m cluster status` shows the progress"
    )
    return 0
