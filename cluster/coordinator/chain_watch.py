"""Turns the Task contract's events into the coordinator's task rows, for the farm's own nodes only.

Each event is applied idempotently (a replayed page changes nothing), in chain order, and the block
cursor is stored beside the rows (cluster.chain.events.CursorStore in the same state directory). Only
events at least ``confirmations`` blocks deep arrive here (the EventReader holds back the rest), so a
reorg above that depth never reaches a row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from cluster.chain.contracts import Events
from cluster.chain.events import ChainEvent
from cluster.chain.task_events import (
    CommitmentsReady,
    NodeOutcome,
    TaskAborted,
    TaskEvent,
    TaskNodeSettled,
    TaskStarted,
    TaskSuccess,
    task_event,
)
from cluster.coordinator.store import NodeTask, Outcome, Step, TaskStore
from cluster.coordinator.timeline import RoundTimeline

log = logging.getLogger(__name__)
# The stage a round reaches when the watch applies an event to it (cluster/coordinator/timeline.py).
STAGE_OF_EVENT: dict[type, str] = {
    TaskStarted: "selected",
    CommitmentsReady: "commitments_ready",
    TaskSuccess: "validated",
    TaskAborted: "ended",
    TaskNodeSettled: "settled",
}


class ChainWatch:
    def __init__(
        self,
        store: TaskStore,
        is_ours: Callable[[str], bool],
        task_timeout_s: int,
        timeline: RoundTimeline | None = None,
    ):
        self.store = store
        self.timeline = timeline or RoundTimeline()
        self.is_ours = is_ours
        # The contract's deadline is the starting block's timestamp + taskTimeout: the watch knows both, so
        # a round's deadline costs no call. taskTimeout is read at start, then followed by its event.
        self.task_timeout_s = task_timeout_s

    def apply(self, events: list[ChainEvent]) -> list[NodeTask]:
        """Apply a page of events; returns the rows that changed and may have a step to take."""
        changed: dict[tuple[int, int], NodeTask] = {}
        for event in events:
            if event.name == Events.TASK_TIMEOUT_SET and event.contract == "Task":
                self.task_timeout_s = event.args["taskTimeout"]
                continue
            typed = task_event(event)
            for task in self._apply_one(typed) if typed is not None else ():
                changed[(task.task_id, task.round)] = task
                if isinstance(typed, CommitmentsReady) and task.result is not None:
                    # every commitment is mined: ours too, even if its sender has not seen the receipt yet
                    self.timeline.mark(task.key, "committed")
                self.timeline.mark(task.key, STAGE_OF_EVENT.get(type(typed), typed.name))
        return list(changed.values())

    def _apply_one(self, event: TaskEvent) -> Collection[NodeTask]:
        if isinstance(event, TaskStarted):
            return self._started(event)
        rows = self.store.of_task(event.task_id)
        if not rows:
            return []
        match event:
            case CommitmentsReady():
                return self._patch(rows, commitments_ready=True)
            case TaskSuccess():
                return self._patch(rows, result_node=event.result_node)
            case TaskAborted():
                outcome = Outcome.CANCELLED if event.is_cancel else Outcome.ABORTED
                return self._patch(rows, step=Step.DONE, outcome=outcome)
            case TaskNodeSettled():
                return self._settled(event, rows)
        return []

    def _started(self, event: TaskStarted) -> list[NodeTask]:
        if not self.is_ours(event.node):
            return []
        assert event.block_time_s is not None  # the EventReader's pager fills it in
        deadline_chain_s = event.block_time_s + self.task_timeout_s
        task = NodeTask(
            task_id=event.task_id, round=event.round, node=event.node, task_type=event.task_type,
            task_hash=event.task_hash, step=Step.SELECTED, deadline_chain_s=deadline_chain_s,
        )  # fmt: skip
        return [task] if self.store.add(task) else []

    def _settled(self, event: TaskNodeSettled, rows: list[NodeTask]) -> list[NodeTask]:
        if event.outcome is NodeOutcome.SLASHED:
            log.error("[coordinator] node slashed task=%d node=%s", event.task_id, event.node)
        mine = [t for t in rows if t.node == event.node]
        # a node's own settlement is final, even over an abort seen first
        return self._patch(
            mine,
            unless_done=False,
            step=Step.DONE,
            outcome=Outcome(event.outcome.value),
            fee_earned=event.fee_wei,
        )

    def _patch(self, rows: list[NodeTask], *, unless_done: bool = True, **changes: object) -> list[NodeTask]:
        """Write this event's fields (only those) to each row; returns the rows as they are now."""
        updated = []
        for row in rows:
            if self.store.patch(row.task_id, row.round, unless_done=unless_done, **changes):
                fresh = self.store.get(row.task_id, row.round)
                if fresh is not None:
                    updated.append(fresh)
        return updated
