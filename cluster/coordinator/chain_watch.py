"""Turns the Task contract's events into the coordinator's task rows, for the farm's own nodes only.

Each event is applied idempotently (a replayed page changes nothing), in chain order, and the block
cursor is stored beside the rows (cluster.chain.events.CursorStore in the same state directory). Only
events at least ``confirmations`` blocks deep arrive here (the EventReader holds back the rest), so a
reorg above that depth never reaches a row.

A round's deadline is decided here: the TaskStarted block's time plus the task timeout then in force, as
the contract computes it, then wherever the task's TaskDeadlineMoved events move it (the last commitment,
the success or the second "no arguments" report leave the next step the contract's response window); the
timeout (and the arguments wait) are followed through their events (``TaskTimers``), and every part of
the coordinator reads the deadline from the row. The cap a task
paid for comes from its TaskPending, kept until the task starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from cluster.chain.events import ChainEvent
from cluster.chain.task_events import (
    ArgumentsWaitSet,
    AuditStarted,
    CommitmentsReady,
    DeadlineMoved,
    NodeOutcome,
    TaskAborted,
    TaskEvent,
    TaskNodeSettled,
    TaskPending,
    TaskSampled,
    TaskStarted,
    TaskSuccess,
    TaskTimeoutSet,
    task_event,
    timing_event,
)
from cluster.coordinator.chain_ops import TaskTimers
from cluster.coordinator.round_state import NodeTask, Outcome, Step
from cluster.coordinator.store import PendingTask, RoundStore
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
        store: RoundStore,
        is_ours: Callable[[str], bool],
        timers: TaskTimers,
        timeline: RoundTimeline | None = None,
    ):
        self.store = store
        self.timeline = timeline or RoundTimeline()
        self.is_ours = is_ours
        self.timers = timers  # read at start, then followed by their events (shared with the rounds)

    def apply(self, events: list[ChainEvent]) -> list[NodeTask]:
        """Apply a page of events, in one transaction (the page's rows on disk at once, before the cursor
        moves past it; none of them if it fails); returns the rows that changed and may have a step to
        take."""
        with self.store.transaction():
            return self._apply(events)

    def _apply(self, events: list[ChainEvent]) -> list[NodeTask]:
        changed: dict[tuple[int, int], NodeTask] = {}
        for event in events:
            match timing_event(event):
                case TaskTimeoutSet(task_timeout_s=timeout_s):
                    self.timers.task_timeout_s = timeout_s
                case ArgumentsWaitSet(arguments_wait_s=wait_s):
                    self.timers.arguments_wait_s = wait_s
            typed = task_event(event)
            for task in self._apply_one(typed) if typed is not None else ():
                changed[(task.task_id, task.round)] = task
                if isinstance(typed, CommitmentsReady) and task.result is not None:
                    # every commitment is mined: ours too, even if its sender has not seen the receipt yet
                    self.timeline.mark(task.key, "committed")
                self.timeline.mark(task.key, STAGE_OF_EVENT.get(type(typed), typed.name))
        return list(changed.values())

    def _apply_one(self, event: TaskEvent) -> Collection[NodeTask]:
        pending = self.store.follow_pending(event)
        if isinstance(event, TaskPending | TaskSampled):
            return []
        if isinstance(event, TaskStarted):
            return self._started(event, pending)
        rows = self.store.of_task(event.task_id)
        if not rows:
            return []
        match event:
            case CommitmentsReady():
                return self._patch(rows, commitments_ready=True)
            case DeadlineMoved():
                return self._patch(rows, deadline_chain_s=event.deadline_s)
            case TaskSuccess():
                return self._patch(rows, result_node=event.result_node)
            case TaskAborted():
                outcome = Outcome.CANCELLED if event.is_cancel else Outcome.ABORTED
                return self._patch(rows, step=Step.DONE, outcome=outcome)
            case TaskNodeSettled():
                return self._settled(event, rows)
            case AuditStarted():  # the first node's commitment waits for the auditors' now
                return self._patch(rows, is_audited=True, commitments_ready=False)
        return []

    def _started(self, event: TaskStarted, pending: PendingTask | None) -> list[NodeTask]:
        if not self.is_ours(event.node):
            return []
        assert event.block_time_s is not None  # the EventReader's pager fills it in
        if pending is None:  # pending before this farm's first block: the relay still checks the cap
            log.warning("[coordinator] cap not known task=%d (pending before the first block)", event.task_id)
        task_hash = event.task_hash
        if task_hash == bytes(32) and pending is not None and pending.task_hash is not None:
            task_hash = pending.task_hash  # an audit's rounds start with a zero hash: TaskPending has it
        task = NodeTask(
            task_id=event.task_id, round=event.round, node=event.node, task_type=event.task_type,
            task_hash=task_hash, step=Step.SELECTED, cap=pending and pending.cap,
            started_chain_s=event.block_time_s,
            deadline_chain_s=event.block_time_s + self.timers.task_timeout_s,
            audit_rate=pending.audit_rate if pending else 0,
            result_after_audit=pending.result_after_audit if pending else False,
            is_audited=event.round > 0 and bool(pending and pending.audit_rate),
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
            fresh = self.store.patched(row.task_id, row.round, unless_done=unless_done, **changes)
            if fresh is not None:
                updated.append(fresh)
        return updated
