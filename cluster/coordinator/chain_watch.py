"""Turns the Task contract's events into the coordinator's task rows, for the farm's own nodes only.

Each event is applied idempotently (a replayed page changes nothing), in chain order, and the block
cursor is stored beside the rows (cluster.chain.events.CursorStore in the same state directory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cluster.chain.events import ChainEvent
from cluster.coordinator.store import NodeTask, Outcome, Step, TaskStore

log = logging.getLogger(__name__)


class ChainWatch:
    def __init__(self, store: TaskStore, our_nodes: Callable[[], set[str]], default_timeout_s: float):
        self.store = store
        self.our_nodes = our_nodes
        self.default_timeout_s = default_timeout_s
        self.deadlines: dict[int, float] = {}  # filled by the coordinator from getTask when known

    def apply(self, events: list[ChainEvent], chain_time: float) -> list[NodeTask]:
        """Apply a page of events; returns the rows that changed and may have a step to take."""
        ours = self.our_nodes()
        changed: dict[tuple[int, int], NodeTask] = {}
        for event in events:
            for task in self._apply_one(event, ours, chain_time):
                changed[(task.task_id, task.round)] = task
        return list(changed.values())

    def _apply_one(self, event: ChainEvent, ours: set[str], chain_time: float) -> list[NodeTask]:
        args = event.args
        name = event.name
        if name == "TaskStarted":
            if args["selectedNode"] not in ours:
                return []
            task = NodeTask(
                task_id=args["taskId"], round=args["round"], node=args["selectedNode"],
                task_type=args["taskType"], task_hash=bytes(args["taskHash"]), step=Step.SELECTED,
                deadline=self.deadlines.get(args["taskId"], chain_time + self.default_timeout_s),
            )  # fmt: skip
            added = self.store.add(task)
            return [task] if added else []
        rows = self.store.of_task(args["taskId"]) if "taskId" in args else []
        if not rows:
            return []
        if name == "TaskResultCommitmentsReady":
            return self._patch(rows, commitments_ready=True)
        if name == "TaskSuccess":
            return self._patch(rows, result_node=args["resultNode"])
        if name == "TaskAborted":
            outcome = Outcome.CANCELLED if args["reason"] == "Task Cancelled" else Outcome.ABORTED
            return self._patch(rows, step=Step.DONE, outcome=outcome)
        if name in ("TaskNodeSuccess", "TaskNodeSlashed", "TaskNodeCancelled"):
            outcome = {"TaskNodeSuccess": Outcome.PAID, "TaskNodeSlashed": Outcome.SLASHED}.get(
                name, Outcome.CANCELLED
            )
            if outcome is Outcome.SLASHED:
                log.error("[coordinator] node slashed task=%d node=%s", args["taskId"], args["node"])
            mine = [t for t in rows if t.node == args["node"]]
            # a node's own settlement is final, even over an abort seen first
            return self._patch(
                mine, unless_done=False, step=Step.DONE, outcome=outcome, fee_earned=int(args.get("fee", 0))
            )
        return []

    def _patch(self, rows: list[NodeTask], *, unless_done: bool = True, **changes: object) -> list[NodeTask]:
        """Write this event's fields (only those) to each row; returns the rows as they are now."""
        updated = []
        for row in rows:
            if self.store.patch(row.task_id, row.round, unless_done=unless_done, **changes):
                fresh = self.store.get(row.task_id, row.round)
                if fresh is not None:
                    updated.append(fresh)
        return updated
