"""What the chain said, written inside one transaction of the relay's store (``RelayStore.chain_page``).

Task facts (creator, selected nodes, result, abort) are idempotent: replaying one changes nothing. The
network statistics mirror the NetworkStats contract: node counters move on every NodeStatusChanged,
task counters on every phase a task enters. Those are increments, so they rely on the page being
applied exactly once, which ``chain_page``'s cursor check guarantees.

Facts about a task the relay never saw (created before its start block) are skipped, not raised: one
such event must not undo the rest of its page. (No SAVEPOINTs: with pysqlite, releasing the outermost
savepoint commits, which would split the page into one transaction per event.)
"""

from __future__ import annotations

import json
import logging
import time

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from cluster.chain.contracts import NodeStatus, Validation
from network.relay import schema
from network.relay.schema import PHASE_COUNTER, Counter, TaskPhase, TaskState

log = logging.getLogger(__name__)
TASKS = schema.tasks

# The counter a node status counts under (NetworkStats._countNode); Quit counts nowhere.
STATUS_COUNTER = {
    NodeStatus.AVAILABLE: Counter.NODES_AVAILABLE,
    NodeStatus.PAUSED: Counter.NODES_PAUSED,
    NodeStatus.BUSY: Counter.NODES_BUSY,
    NodeStatus.PENDING_PAUSE: Counter.NODES_BUSY,
    NodeStatus.PENDING_QUIT: Counter.NODES_BUSY,
}
STATE_PHASE = {TaskState.PENDING: TaskPhase.QUEUED, TaskState.RUNNING: TaskPhase.RUNNING}


class ChainFacts:
    def __init__(self, conn: Connection):
        self.conn = conn

    # -- tasks --------------------------------------------------------------------------------------------

    def _state(self, task_id: int) -> TaskState | None:
        state = self.conn.scalar(select(TASKS.c.state).where(TASKS.c.task_id == task_id))
        return None if state is None else TaskState(state)

    def saw_task(
        self, task_id: int, task_type: int, creator: str, task_hash: bytes, cap: int | None = None
    ) -> None:
        """A task exists on chain (``cap``: from its TaskPending). Replaying the same fact changes nothing."""
        if self._state(task_id) is None:
            self.conn.execute(
                insert(TASKS).values(
                    task_id=task_id, task_type=task_type, creator=creator, task_hash="0x" + task_hash.hex(),
                    state=TaskState.PENDING.value, selected_nodes="{}", args_uploaded=False,
                    num_result_files=0, cap=cap,
                )
            )  # fmt: skip

    def saw_selection(self, task_id: int, round_: int, node: str) -> None:
        row = self.conn.execute(
            select(TASKS.c.state, TASKS.c.selected_nodes).where(TASKS.c.task_id == task_id)
        ).first()
        if row is None:
            log.warning("[relay] event for a task never seen skipped task_id=%d", task_id)
            return
        selected = json.loads(row.selected_nodes)
        selected[str(round_)] = node
        state = TaskState.RUNNING.value if row.state == TaskState.PENDING.value else row.state
        self.conn.execute(
            update(TASKS)
            .where(TASKS.c.task_id == task_id)
            .values(selected_nodes=json.dumps(selected, sort_keys=True), state=state)
        )

    def saw_sampled(self, task_id: int, result_after_audit: bool) -> None:
        """TaskSampled: one node, audited by two more when the draw says so (issue 28)."""
        sampled = Validation.SAMPLED_RESULT_AFTER_AUDIT if result_after_audit else Validation.SAMPLED
        self._set(task_id, validation=int(sampled))

    def saw_first_commitment(self, task_id: int, commitment: bytes) -> None:
        """Round 0's commitment, kept for a sampled task only (a Full task's early upload is refused)."""
        self.conn.execute(
            update(TASKS)
            .where(TASKS.c.task_id == task_id, TASKS.c.validation.is_not(None))
            .values(commitment="0x" + commitment.hex())
        )

    def saw_audit(self, task_id: int) -> None:
        """TaskAuditStarted: rounds 1 and 2 are selected (their TaskStarted came first, in the same page)."""
        self._set(task_id, audited=True)

    def _set(self, task_id: int, **values: object) -> bool:
        """Write a seen task's fields; False (and a warning) for a task never seen."""
        if self._state(task_id) is None:
            log.warning("[relay] event for a task never seen skipped task_id=%d", task_id)
            return False
        self.conn.execute(update(TASKS).where(TASKS.c.task_id == task_id).values(**values))
        return True

    def saw_success(self, task_id: int, result: bytes, result_node: str, at: float | None = None) -> None:
        if self._set(task_id, state=TaskState.SUCCEEDED.value, result=result.hex(), result_node=result_node):
            self._ended(task_id, at)

    def saw_abort(self, task_id: int, reason: str, at: float | None = None) -> TaskPhase | None:
        """Returns the phase the abort ended (queued or running), None if the task had already ended or
        was never seen (aborted before the relay's start block: nothing to keep)."""
        state = self._state(task_id)
        if state is None:
            return None
        if state is not TaskState.SUCCEEDED:  # an abort never overwrites a validated result
            self.conn.execute(
                update(TASKS)
                .where(TASKS.c.task_id == task_id)
                .values(state=TaskState.ABORTED.value, abort_reason=reason)
            )
        self._ended(task_id, at)
        return STATE_PHASE.get(state)

    def _ended(self, task_id: int, at: float | None) -> None:
        self.conn.execute(
            update(TASKS)
            .where(TASKS.c.task_id == task_id, TASKS.c.ended_at.is_(None))
            .values(ended_at=time.time() if at is None else at)
        )

    # -- network statistics -------------------------------------------------------------------------------

    def task_phase_changed(self, was: TaskPhase, now: TaskPhase) -> None:
        if was is TaskPhase.NONE:
            self._count(Counter.TASKS_TOTAL, 1)
        else:
            self._count(PHASE_COUNTER[was], -1)
        self._count(PHASE_COUNTER[now], 1)

    def node_joined(
        self, node: str, gpu_name: str, gpu_vram_gb: int, runtime: str, *, block: int, log_index: int
    ) -> None:
        """A node's card; its first join fixes its place in the list (a rejoin keeps it)."""
        info = {"gpu_name": gpu_name, "gpu_vram_gb": gpu_vram_gb, "runtime": runtime}
        if not self._known_node(node, block, log_index, **info):
            self.conn.execute(update(schema.nodes).where(schema.nodes.c.address == node).values(**info))

    def node_status_changed(
        self, node: str, was: NodeStatus, now: NodeStatus, *, block: int, log_index: int
    ) -> None:
        self._known_node(node, block, log_index)
        self.conn.execute(update(schema.nodes).where(schema.nodes.c.address == node).values(status=int(now)))
        if was is not NodeStatus.QUIT:
            self._count(Counter.NODES_TOTAL, -1)
            self._count(STATUS_COUNTER[was], -1)
        if now is not NodeStatus.QUIT:
            self._count(Counter.NODES_TOTAL, 1)
            self._count(STATUS_COUNTER[now], 1)

    def _known_node(self, node: str, block: int, log_index: int, **info: object) -> bool:
        """Adds the node to the list if it is new; True when it was."""
        exists = self.conn.scalar(select(schema.nodes.c.address).where(schema.nodes.c.address == node))
        if exists is not None:
            return False
        values = {"gpu_name": "", "gpu_vram_gb": 0, "runtime": "", **info}
        self.conn.execute(
            insert(schema.nodes).values(
                address=node, first_block=block, first_log=log_index, status=int(NodeStatus.QUIT), **values
            )
        )
        return True

    def _count(self, counter: Counter, delta: int) -> None:
        self.conn.execute(
            update(schema.counters)
            .where(schema.counters.c.name == counter.value)
            .values(value=schema.counters.c.value + delta)
        )
