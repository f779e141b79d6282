"""Options the farm's commands share (``python -m cluster status|resume-card|payout|retire|ledger``). Light to
import: every command's ``--help`` answers without a cluster."""

from __future__ import annotations

import argparse


def add_ray_address(parser: argparse.ArgumentParser) -> None:
    """``--address``: the Ray cluster whose coordinator the command asks."""
    parser.add_argument(
        "--address", default=None,
        help="the Ray cluster (default: $RAY_ADDRESS, else the cluster started last on this machine)",
    )  # fmt: skip
