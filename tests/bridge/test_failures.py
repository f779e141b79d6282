"""Which of the bridge's records may still hold a fee on chain: the sweep's part in a failed task."""

from __future__ import annotations

import time
from pathlib import Path

from network.bridge.tasks import BridgeTask, TaskStore


def test_a_failed_task_created_on_chain_is_swept_once_for_its_refund(tmp_path: Path):
    store = TaskStore(tmp_path)
    try:
        now = time.time()
        rows = [("failed", 7), ("failed", None), ("running", 8), ("aborted", 9)]
        for n, (status, task_id) in enumerate(rows):
            store.add(
                BridgeTask(id=f"task_{n}", kind="native", model="m", task_type="gpt", task_args="{}",
                           created_at=now, deadline=now)
            )  # fmt: skip
            store.update(f"task_{n}", status=status, task_id=task_id)
        assert {r.id for r in store.to_sweep()} == {"task_0", "task_2"}
        assert {r.id for r in store.unfinished()} == {"task_2"}  # a failed task is not driven again
        store.update("task_0", swept=True)  # cancelled, or found ended on chain
        assert {r.id for r in store.to_sweep()} == {"task_2"}
    finally:
        store.close()
