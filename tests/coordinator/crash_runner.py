"""A coordinator process for the restart tests: ``python -m tests.coordinator.crash_runner CONFIG.json``.

Runs the coordinator (its nodes brought up, as every start does) until every row of the listed tasks is
done (three rounds each, or what a sampled task has: ``rounds_per_task`` null), or, when ``crash_at``
names a checkpoint (``Failpoints.checkpoint``: of a round in cluster.coordinator.rounds, or of a node's
bring-up in cluster.coordinator.nodes), dies the
``crash_after``-th time it is reached with ``os._exit(137)``: no finally blocks, no flush, no goodbye,
as a killed process dies. With ``payout`` ("sweep" or "dry-run") it sweeps the node accounts to
``funds.payout_address`` instead of waiting for tasks, as ``python -m cluster payout`` does, and prints
the report.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from cluster.chain.accounts import OperatorKeys
from cluster.config import ChainEndpoints
from cluster.coordinator.coordinator import Coordinator, CoordinatorSettings
from cluster.coordinator.funds.settings import FundsSettings
from cluster.coordinator.round_state import Step
from cluster.failpoints import Failpoints
from cluster.protocol.cards import CardModel
from tests.coordinator.factories import FAST
from tests.coordinator.local_runner import LocalJobRunner

CRASH_EXIT_CODE = 137


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    crash_at, crash_after = config.get("crash_at"), config.get("crash_after", 1)
    reached = Counter[str]()

    def checkpoint(point: str, subject: str) -> None:
        reached[point] += 1
        if point == crash_at and reached[point] >= crash_after:
            os._exit(CRASH_EXIT_CODE)

    settings = CoordinatorSettings(
        endpoints=ChainEndpoints.model_validate(config["endpoints"]), state_dir=Path(config["state_dir"]),
        cards=[CardModel(*c) for c in config["cards"]], poll_interval_s=0.05, sender=FAST,
        failpoints=Failpoints(checkpoint=checkpoint), funds=FundsSettings(**config.get("funds", {})),
    )  # fmt: skip
    keys = OperatorKeys.from_mnemonic(config["mnemonic"])
    if config.get("payout"):
        return asyncio.run(_payout(settings, keys, is_dry_run=config["payout"] == "dry-run"))
    rounds = config.get("rounds_per_task", 3)
    return asyncio.run(_run(settings, keys, config["task_ids"], config["timeout_s"], rounds))


async def _payout(settings: CoordinatorSettings, keys: OperatorKeys, *, is_dry_run: bool) -> int:
    coordinator = Coordinator(settings, keys, LocalJobRunner(settings.state_dir / "hub-cache"))
    await coordinator.start()
    try:
        await coordinator.join_nodes()
        report = await coordinator.funds.payout(is_dry_run=is_dry_run)
        print(report.model_dump_json())
        return 1 if report.errors else 0
    finally:
        await coordinator.close()


async def _run(
    settings: CoordinatorSettings,
    keys: OperatorKeys,
    task_ids: list[int],
    timeout_s: float,
    rounds_per_task: int | None,
) -> int:
    """``rounds_per_task`` None: a sampled task's one round, or three once audited (its first round ends
    only with the audit's end)."""
    coordinator = Coordinator(settings, keys, LocalJobRunner(settings.state_dir / "hub-cache"))
    await coordinator.start()
    await coordinator.join_nodes()  # as every start does: joins, resumes, or finds the nodes available
    stop = asyncio.Event()
    loop = asyncio.create_task(coordinator.run(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            by_task = [coordinator.store.of_task(t) for t in task_ids]
            if all(_all_started(rows, rounds_per_task) for rows in by_task) and all(
                r.step is Step.DONE for rows in by_task for r in rows
            ):
                print(coordinator.status().model_dump_json())
                return 0
            await asyncio.sleep(0.1)
        print(coordinator.status().model_dump_json(), file=sys.stderr)
        return 1
    finally:
        stop.set()
        await loop
        await coordinator.close()


def _all_started(rows: list, rounds_per_task: int | None) -> bool:
    """Every round of the task has its row: the given count, or for a sampled task (None) at least one."""
    return len(rows) == rounds_per_task if rounds_per_task is not None else bool(rows)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
