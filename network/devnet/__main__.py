"""``python -m network.devnet [--tasks N] [overrides...]``: a whole network on this machine.

Starts anvil, deploys and wires the contracts, funds an operator, starts the relay and the node cluster
(Ray, virtual GPUs of two card models, tiny models built on the spot), then sends a stream of GPT
and SD tasks as an application would and shows their progress. With ``--tasks N`` it runs N tasks and
exits with a summary (exit code 1 when any task failed); otherwise it runs until Ctrl-C. Hydra overrides
of the cluster's config follow the options (e.g. ``rig.places_per_gpu=2``).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import threading
from pathlib import Path

from cluster.chain.contracts import Validation
from network.devnet.stack import STOP_BUDGET_S, Devnet
from network.devnet.view import make_view

UNHURRIED_STOP_S = 180.0  # the tasks done or stdin closed: the farm's nodes have time to quit


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m network.devnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=None, help="run this many tasks, then exit")
    parser.add_argument("--in-flight", type=int, default=2, help="tasks the application keeps open at once")
    parser.add_argument("--dir", type=Path, default=Path(".devnet"), help="models cache and this run's state")
    parser.add_argument("--fresh-models", action="store_true", help="rebuild the tiny models")
    parser.add_argument(
        "--kill-coordinator", type=int, default=0, metavar="K",
        help="a fault drill: kill the coordinator actor K times while tasks stream (Ray restarts it)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-relay", type=float, default=0, metavar="S",
        help="a fault drill: stop the relay for S seconds halfway through the tasks",
    )  # fmt: skip
    parser.add_argument(
        "--relay-wait", type=float, default=60.0, metavar="S",
        help="the least the application waits for the relay before it gives up on a task (60 s)",
    )  # fmt: skip
    parser.add_argument(
        "--audit-rate", type=int, default=1, metavar="N",
        help="sampled audits: the Task contract's audit rate after deployment, and an audit pool seeded "
        "(1, the default: every task on three nodes, today's protocol)",
    )  # fmt: skip
    parser.add_argument(
        "--validation", choices=[v.name.lower() for v in Validation], default=None,
        help="the application's validation (default: sampled when --audit-rate > 1, else full)",
    )  # fmt: skip
    parser.add_argument("--plain", action="store_true", help="a line per change even on a terminal")
    parser.add_argument(
        "--hold", action="store_true",
        help="after the tasks, keep the network up until stdin closes (for scripts that inspect it)",
    )  # fmt: skip
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    options, overrides = parse(argv)
    # SIGTERM (timeout, process managers) stops the devnet as Ctrl-C does, even while it starts: the
    # finally below then stops every process it started, instead of the default death leaving them.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if options.fresh_models:
        shutil.rmtree(options.dir / "models", ignore_errors=True)
    validation = None if options.validation is None else Validation[options.validation.upper()]
    devnet = Devnet(options.dir, overrides, audit_rate=options.audit_rate, validation=validation)
    devnet.view = make_view(devnet.board, sys.stdout, plain=options.plain)
    stop = asyncio.Event()
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        stop.set()

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        code = await devnet.stream(
            options.tasks,
            options.in_flight,
            stop,
            kills=options.kill_coordinator,
            relay_outage_s=options.stop_relay,
            relay_wait_s=options.relay_wait,
        )
        if options.hold and not stop.is_set():
            devnet.say("holding the network up until stdin closes (--hold)")
            # a daemon thread: Ctrl-C must not wait for a read that may never end
            reader = threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
            reader.daemon = True
            reader.start()
            await stop.wait()
        return code

    try:
        devnet.start()
        return asyncio.run(run())
    except KeyboardInterrupt:  # SIGINT or SIGTERM before the stream began
        signalled.append(signal.SIGINT)
        return 130
    finally:
        # Signalled, the stop is bounded (STOP_BUDGET_S): a second signal must not cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        devnet.stop(STOP_BUDGET_S if signalled else UNHURRIED_STOP_S)


if __name__ == "__main__":
    sys.exit(main())
