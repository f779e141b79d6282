"""``python -m cluster drain MACHINE`` and ``python -m cluster undrain MACHINE``: take a machine of a running
farm out for maintenance (a KubeRay preStop hook calls it with the pod's address) and back. Light to
import: ``--help`` answers without a cluster."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cluster.cli_options import add_ray_address

COMMANDS = ("drain", "undrain")
# A task's timeout (900 s) plus the two response windows that may move its deadline (2 x 120 s), and time
# for the pauses to be mined and the workers to stop: the manifests' preStop hook passes the same.
DEFAULT_TIMEOUT_S = 1500.0


def add_parsers(commands: Any) -> None:
    drain = commands.add_parser(
        "drain",
        help="take a machine out: pause its places' accounts, finish its jobs, stop its workers",
        description="Drain a machine of the farm: as many of its card models' node accounts as it has "
        "places are paused on chain (idle ones first; a busy one when its task ends) before anything "
        "else, no new job goes to its workers, its running jobs finish within their deadlines, then its "
        "workers stop. Exits 0 once the machine is safe to remove, 1 if jobs still ran at the timeout. "
        "The drain outlives a coordinator restart; `undrain` takes the machine back.",
    )
    drain.add_argument("machine", help="the machine's address (its pod IP) or Ray node id (or a prefix)")
    drain.add_argument(
        "--timeout-s", type=float, default=DEFAULT_TIMEOUT_S,
        help=f"how long to wait for its running jobs (default {DEFAULT_TIMEOUT_S:g}: a task's deadline)",
    )  # fmt: skip
    drain.add_argument(
        "--no-wait", action="store_true", help="return once its accounts are paused; its jobs finish after"
    )
    add_ray_address(drain)
    undrain = commands.add_parser(
        "undrain",
        help="take a draining or drained machine back",
        description="Undrain a machine: its workers start again if they were stopped, and its places' "
        "accounts resume (or are joined) once they serve.",
    )
    undrain.add_argument("machine", help="the machine's address or Ray node id (or a prefix)")
    add_ray_address(undrain)


def run(options: argparse.Namespace, actor: Any) -> int:
    import ray

    try:
        if options.command == "drain":
            view = ray.get(
                actor.drain.remote(options.machine, wait=not options.no_wait, timeout_s=options.timeout_s)
            )
        else:
            view = ray.get(actor.undrain.remote(options.machine))
    except ray.exceptions.RayTaskError as exc:
        print(f"not done: {exc.cause}", file=sys.stderr)
        return 1
    where = f"machine {view.address} ({view.node_id[:8]})"
    if view.is_safe_to_remove:
        print(f"{where} is {view.state}: its workers are stopped and it is safe to remove")
        return 0
    print(f"{where} is {view.state}: {view.num_running} job(s) running, {view.num_places} place(s)")
    return 0 if options.command == "undrain" or options.no_wait else 1
