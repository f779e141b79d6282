"""The node cluster's own cost: stages of a task, the coordinator's capacity, scheduling, gas per task.

    python benchmarks/cluster_overhead.py                    # every phase; records the results
    python benchmarks/cluster_overhead.py --phases capacity --slots 60 300
    HELIUM_BENCH_CODE=/tmp/before python benchmarks/cluster_overhead.py --phases capacity --label before
    python benchmarks/cluster_overhead.py --phases capacity --slots 300 --label profile --profile sampling
    python benchmarks/cluster_overhead.py --phases control-plane --slots 300 1000 4000 --drivers 0 1 2 4

Phases (figures go to benchmarks/results/cluster_overhead.json under ``--label``, and from there into
benchmarks/results/cluster_overhead.md, where the labels stand side by side):
- ``stages``: the local network for real (anvil with a block a second, the relay process, Ray with the
  cpu-devnet rig's six workers, the tiny model): when a task passes each stage from created to paid,
  and each round's time split into inference, waiting for the chain, and the cluster's own overhead.
- ``capacity``: rounds per second sustained by one coordinator with 60, 300 and 1,000 node slots, and its
  CPU milliseconds per round. Anvil (a block a second), the relay and an application that keeps every
  slot busy (benchmarks/load_app.py) are real, each in its own process; the GPU workers are simulated
  behind the pool's interface by an engine that answers at once (benchmarks/farm_sim.py). Also timed:
  bring-up of the node accounts, and a restart with the rounds in flight left unfinished; counted: the
  gas the farm's receipts show per task, failed transactions included, and RPC calls per round.
- ``control-plane``: the coordinator (and its round drivers, ``--drivers``) alone: the chain and the relay
  are fakes in one process (benchmarks/fake_network.py), the application is the fake chain's own task
  creation, the GPU workers are simulated; rounds/s, CPU ms per round of the coordinator and of each
  driver, RPC calls per round, failed transactions, by places and drivers (benchmarks/control_plane.py).
- ``scheduling``: choosing the worker of a card group for a job, with 1,000 workers in the group.
``HELIUM_BENCH_CODE`` names another checkout whose ``cluster`` the coordinator runs (an earlier version,
for the before/after table); the relay and the application always run this checkout's code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if os.environ.get("HELIUM_BENCH_CODE"):  # an earlier version's cluster, for the before/after table
    sys.path.insert(0, os.environ["HELIUM_BENCH_CODE"])  # (cluster.envs lists it; this runs before imports)

from benchmarks.control_plane import run_control_plane  # noqa: E402
from benchmarks.overhead_phases import run_capacity, run_scheduling, run_stages  # noqa: E402
from benchmarks.overhead_profile import markdown  # noqa: E402
from benchmarks.overhead_report import write_report  # noqa: E402

RESULTS_JSON = REPO / "benchmarks" / "results" / "cluster_overhead.json"


def machine() -> dict[str, Any]:
    load_1m, _, _ = os.getloadavg()
    return {
        "cpu": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
        "load_at_start": round(load_1m, 2), "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", nargs="+", default=["stages", "capacity", "scheduling"])
    parser.add_argument("--slots", nargs="+", type=int, default=[60, 300, 1000])
    parser.add_argument("--seconds", type=float, default=60.0, help="of each capacity measurement")
    parser.add_argument(
        "--drivers", nargs="+", type=int, default=[0], help="round drivers of the control-plane phase"
    )
    parser.add_argument("--warmup", type=float, default=None, help="control-plane warm-up, s")
    parser.add_argument("--tasks", type=int, default=12, help="GPT tasks of the stages phase")
    parser.add_argument("--label", default="after", help="the column these figures go to")
    parser.add_argument(
        "--setup", choices=["bring-up", "direct"], default="bring-up",
        help="node accounts joined by the coordinator, or directly (for an earlier version)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", choices=["sampling", "cprofile"], default=None,
        help="profile the coordinator over the capacity window (benchmarks/overhead_profile.py); no restart; "
        "figures go to the label's 'profile' entry, not its capacity table",
    )  # fmt: skip
    options = parser.parse_args(argv)
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    run = results.setdefault(options.label, {})
    if options.phases == ["control-plane"]:  # the other phases' machine (their rows') kept as it was
        run["control_plane_machine"] = machine()
    else:
        run["machine"] = machine()
    if "stages" in options.phases:
        run["stages"] = run_stages(options.tasks)
        print("stages:", json.dumps(dict(run["stages"]["median_s"])))
    if "capacity" in options.phases:
        for slots in options.slots:
            figures = run_capacity(slots, options.seconds, options.setup, options.profile)
            if options.profile:  # profiled figures are not the capacity's: their own entry
                run.setdefault("profile", {}).setdefault(options.profile, {})[str(slots)] = figures
                print(markdown(figures["profile"]))
            else:
                run.setdefault("capacity", {})[str(slots)] = figures
            print(f"capacity slots={slots}:", json.dumps(figures))
    if "control-plane" in options.phases:
        for slots in options.slots:
            for drivers in options.drivers:
                figures = run_control_plane(
                    slots, options.seconds, drivers, warmup_s=options.warmup, profile=options.profile
                )
                if options.profile:  # profiled figures are not the table's: their own entry
                    key = f"control-plane-{slots}-{drivers}"
                    run.setdefault("profile", {}).setdefault(options.profile, {})[key] = figures
                    print(markdown(figures["profile"]))
                else:
                    run.setdefault("control_plane", {}).setdefault(str(slots), {})[str(drivers)] = figures
                print(f"control-plane places={slots} drivers={drivers}:", json.dumps(figures))
    if "scheduling" in options.phases:
        run["scheduling"] = run_scheduling()
        print("scheduling:", json.dumps(run["scheduling"]))
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"wrote {write_report(results)}")
    sys.stdout.flush()
    os._exit(0)  # Ray and aiohttp's threads can hold a finished benchmark's exit: the results are written


if __name__ == "__main__":
    main()
