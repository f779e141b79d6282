"""A full disk is the operator's to fix, not the task's fault: the round keeps its place, says so, and is
paid once space is back (on the real chain, contracts, relay and engine; the full disk is injected where
the round writes its result files)."""

from __future__ import annotations

import asyncio
import errno
from collections import Counter

from cluster.coordinator.round_state import Outcome, Step
from tests.coordinator.factories import (
    create_task,
    gpt_args,
    rounds_end,
    run_until,
    running_coordinator,
    settings,
    upload,
)
from tests.coordinator.local_runner import LocalJobRunner


def test_a_round_whose_result_write_hits_a_full_disk_is_retried_and_paid_once_space_is_back(
    w3, anvil, deployment, relay, operator, tiny_lm_dir, tmp_path
):
    args = gpt_args(tiny_lm_dir, seed=21)
    writes_refused: Counter[tuple[int, int]] = Counter()
    disk = {"is_full": True}

    async def scenario():
        config = settings(anvil, deployment, relay, tmp_path)
        async with running_coordinator(config, operator, LocalJobRunner(tmp_path)) as coordinator:
            write_files = coordinator.store.write_files

            def write_on_the_disk(task_id: int, round_: int, files: list[bytes]) -> None:
                if disk["is_full"]:
                    writes_refused[(task_id, round_)] += 1
                    raise OSError(errno.ENOSPC, "No space left on device", str(coordinator.store.files_dir))
                write_files(task_id, round_, files)

            coordinator.store.write_files = write_on_the_disk  # type: ignore[method-assign]
            task_id = create_task(w3, deployment, args)
            await upload(relay, task_id, args)

            def each_round_refused_twice() -> bool:
                return len(writes_refused) == 3 and min(writes_refused.values()) >= 2

            await run_until(coordinator, each_round_refused_twice)
            while_full = coordinator.status(), coordinator.store.of_task(task_id)
            disk["is_full"] = False  # the operator freed space
            await run_until(coordinator, rounds_end(coordinator, task_id, Outcome.PAID))
            return while_full, coordinator.status()

    (status, rows), after = asyncio.run(scenario())
    # Retried, not failed: every round kept its place and the operator was told why they wait.
    assert {r.step for r in rows} == {Step.SELECTED} and not any(r.failure for r in rows)
    assert status.num_rounds_waiting_for_disk == 3
    assert any("state disk is full" in alert for alert in status.alerts), status.alerts
    assert after.tasks.ended(Outcome.PAID) == 3 and after.num_rounds_waiting_for_disk == 0
    assert not any("disk" in alert for alert in after.alerts)
