"""The relay's tables (SQLAlchemy Core): the same schema on SQLite and PostgreSQL.

- ``relay_tasks``: what the chain said of each task and what was uploaded for it; swept after retention.
- ``relay_cursor``: the next block the follower reads, moved in the same transaction as the facts it
  covers, so a page of events is applied exactly once even across a crash or a change of follower.
- ``relay_nodes`` and ``relay_counters``: the network statistics (``GET /v1/network``), counted from the
  Node and Task events the way the NetworkStats contract counts them; never swept.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

tasks = Table(
    "relay_tasks",
    metadata,
    Column("task_id", BigInteger, primary_key=True, autoincrement=False),
    Column("task_type", Integer, nullable=False),
    Column("creator", String(42), nullable=False),
    Column("task_hash", String(66), nullable=False),
    Column("state", String(16), nullable=False),
    Column("selected_nodes", Text, nullable=False, default="{}"),  # JSON {round: address}
    Column("result", Text, nullable=True),  # hex of the on-chain result bytes
    Column("result_node", String(42), nullable=True),
    Column("abort_reason", Text, nullable=True),
    Column("args_uploaded", Boolean, nullable=False, default=False),
    # when the arguments were first stored (Unix seconds): the time the relay's receipt states
    Column("args_uploaded_at", Float, nullable=True),
    Column("num_result_files", Integer, nullable=False, default=0),
    Column("ended_at", Float, nullable=True, index=True),
    # TaskPending's cap (num_images / max_new_tokens the fee was priced for); NULL when first seen otherwise.
    Column("cap", BigInteger, nullable=True),
    # Sampled audits (issue 28), all NULL for a Full task and for rows written before them:
    # the task's Validation (TaskSampled: 1 Sampled, 2 SampledResultAfterAudit)
    Column("validation", Integer, nullable=True),
    Column(
        "commitment", String(66), nullable=True
    ),  # round 0's, of a sampled task: what an early upload opens
    Column(
        "audited", Boolean, nullable=True
    ),  # TaskAuditStarted seen: the readers of the arguments are final
    # The first node's early upload (docs/relay.md, "Sampled tasks"): its files (in ``early/``, beside
    # ``results/``) and the result they were checked against, which decides when they are served.
    Column("early_result", Text, nullable=True),
    Column("num_early_files", Integer, nullable=True),
)

cursors = Table(
    "relay_cursor",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("next_block", BigInteger, nullable=False),
)

nodes = Table(
    "relay_nodes",
    metadata,
    Column("address", String(42), primary_key=True),
    # where the node first joined: the list's order, stable across pages and replicas
    Column("first_block", BigInteger, nullable=False),
    Column("first_log", Integer, nullable=False),
    Column("gpu_name", Text, nullable=False, default=""),
    Column("gpu_vram_gb", BigInteger, nullable=False, default=0),
    Column("runtime", Text, nullable=False, default=""),
    Column("status", Integer, nullable=False),
    Index("relay_nodes_join_order", "first_block", "first_log"),
)

counters = Table(
    "relay_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


class TaskState(StrEnum):
    PENDING = "pending"  # created, waiting in the queue
    RUNNING = "running"  # nodes selected
    SUCCEEDED = "succeeded"  # a validated result is on chain
    ABORTED = "aborted"


class Counter(StrEnum):
    """The rows of ``relay_counters``: NetworkStats' node and task counters."""

    NODES_TOTAL = "nodes_total"
    NODES_AVAILABLE = "nodes_available"
    NODES_BUSY = "nodes_busy"
    NODES_PAUSED = "nodes_paused"
    TASKS_TOTAL = "tasks_total"
    TASKS_QUEUED = "tasks_queued"
    TASKS_RUNNING = "tasks_running"
    TASKS_SUCCEEDED = "tasks_succeeded"
    TASKS_ABORTED = "tasks_aborted"


class TaskPhase(IntEnum):
    """A task's phase as Task.taskCounts (read by NetworkStats) counts it: every task moves None ->
    (Queued ->) Running -> one end."""

    NONE = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    ABORTED = 4


PHASE_COUNTER = {
    TaskPhase.QUEUED: Counter.TASKS_QUEUED,
    TaskPhase.RUNNING: Counter.TASKS_RUNNING,
    TaskPhase.SUCCEEDED: Counter.TASKS_SUCCEEDED,
    TaskPhase.ABORTED: Counter.TASKS_ABORTED,
}
