"""Python mirrors of the contracts' enums, abort reasons, defaults and event names.

The numeric values are the Solidity enums' (contracts/src/lib/Types.sol and interfaces/ITask.sol); a test
checks these mirrors against the ABIs and the deployed contracts, so a reordering on either side fails
loudly.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from cluster.protocol.task import TaskType

__all__ = [
    "AbortReason",
    "Decision",
    "Events",
    "NodeStatus",
    "RoundState",
    "TaskStatus",
    "TaskType",
    "Validation",
]


class NodeStatus(IntEnum):
    QUIT = 0
    AVAILABLE = 1
    BUSY = 2
    PENDING_PAUSE = 3
    PENDING_QUIT = 4
    PAUSED = 5

    @property
    def holds_task(self) -> bool:
        return self in (NodeStatus.BUSY, NodeStatus.PENDING_PAUSE, NodeStatus.PENDING_QUIT)


class TaskStatus(IntEnum):
    """Task.getTask(...).status. NONE: no live task (never created, or ended and its storage deleted)."""

    NONE = 0
    QUEUED = 1
    STARTED = 2
    COMMITMENTS_READY = 3


class Decision(IntEnum):
    NONE = 0
    SUCCESS = 1
    ERROR_REPORTED = 2


class RoundState(IntEnum):
    PENDING = 0
    SETTLED = 1
    SLASHED = 2
    CANCELLED = 3


class Validation(IntEnum):
    """Task.createTaskWithValidation's choice (issue 28): three nodes, or one audited 1 time in auditRate."""

    FULL = 0
    SAMPLED = 1
    SAMPLED_RESULT_AFTER_AUDIT = 2


class AbortReason(StrEnum):
    """The ``reason`` strings of ``TaskAborted`` (REASON_* of TaskCore.sol and TaskArguments.sol)."""

    RESULT_ILLEGAL = "Task result illegal"
    ERROR_REPORTED = "Task error reported"
    CANCELLED = "Task Cancelled"
    FEE_TOO_LOW = "Task fee is too low"
    NO_ARGUMENTS = "Task arguments not delivered"
    NO_ARGUMENTS_REFUTED = "Task arguments report refuted"


# Defaults of the owner-settable numbers (PROTOCOL.md).
DEFAULT_NODE_STAKE_WEI = 400 * 10**18
DEFAULT_TASK_TIMEOUT_S = 15 * 60
DEFAULT_DISTANCE_THRESHOLD = 5
DEFAULT_KICKOUT_THRESHOLD = 20
DEFAULT_QUEUE_SIZE_LIMIT = 50
# The least time a step the nodes could not foresee leaves the next one (disclose, upload, refute).
DEFAULT_RESPONSE_WINDOW_S = 2 * 60
# What a queued task pays the treasury for its place: basis points of its fee per hour in the queue.
DEFAULT_QUEUE_RENT_BPS_PER_HOUR = 1_000
# Node.setNodeStake: a stake fits 96 bits.
MAX_NODE_STAKE_WEI = 2**96 - 1
# Run time estimates in milliseconds: base + per unit (SD: per image, GPT: per token).
DEFAULT_PRICE_ESTIMATES_MS = {TaskType.SD: (20_000, 30_000), TaskType.GPT: (10_000, 50)}

# Gas signed above an estimate per node a call may draw: the selection reads block.prevrandao, and the
# mined block's is not the one the estimate ran with; a draw that takes a card model below three available
# nodes moves its other two between pools (about 120,000 gas: tests/contracts/test_sampled_audits.py
# measures the spread). Unused gas is refunded.
DRAW_GAS_PER_NODE = 130_000
DRAW_GAS_ALLOWANCE = 3 * DRAW_GAS_PER_NODE  # a task's three nodes (createTask; a sampled task draws one)

POSITION_AWARDS = (10, 9, 6)
SCORE_DENOMINATOR = 50  # the three nodes' task scores always sum to 2 * sum(POSITION_AWARDS)
NEW_NODE_QOS_SCORE = 20
NODES_PER_TASK = 3


class Events:
    """Event names, by emitting contract."""

    # Task
    TASK_TIMEOUT_SET = "TaskTimeoutSet"
    ARGUMENTS_WAIT_SET = "ArgumentsWaitSet"
    RESPONSE_WINDOW_SET = "ResponseWindowSet"
    QUEUE_RENT_SET = "QueueRentSet"
    RELAY_SIGNER_SET = "RelaySignerSet"
    TASK_PENDING = "TaskPending"
    TASK_STARTED = "TaskStarted"
    TASK_RESULT_COMMITMENT_SUBMITTED = "TaskResultCommitmentSubmitted"
    TASK_ERROR_REPORTED = "TaskErrorReported"
    TASK_RESULT_COMMITMENTS_READY = "TaskResultCommitmentsReady"
    TASK_RESULT_DISCLOSED = "TaskResultDisclosed"
    TASK_SUCCESS = "TaskSuccess"
    TASK_RESULT_UPLOADED = "TaskResultUploaded"
    TASK_ABORTED = "TaskAborted"
    TASK_NODE_SUCCESS = "TaskNodeSuccess"
    TASK_NODE_SLASHED = "TaskNodeSlashed"
    TASK_NODE_CANCELLED = "TaskNodeCancelled"
    TASK_FEE_REFUNDED = "TaskFeeRefunded"
    TASK_NO_ARGUMENTS_REPORTED = "TaskNoArgumentsReported"
    TASK_NO_ARGUMENTS_REFUTED = "TaskNoArgumentsRefuted"
    TASK_NODE_COMPENSATED = "TaskNodeCompensated"
    TASK_DEADLINE_MOVED = "TaskDeadlineMoved"
    QUEUE_RENT_PAID = "QueueRentPaid"
    AUDIT_RATE_SET = "AuditRateSet"
    TASK_SAMPLED = "TaskSampled"
    TASK_AUDIT_DRAWN = "TaskAuditDrawn"
    TASK_AUDIT_STARTED = "TaskAuditStarted"
    # Node
    NODE_JOINED = "NodeJoined"
    NODE_STATUS_CHANGED = "NodeStatusChanged"
    NODE_PAUSED = "NodePaused"
    NODE_RESUMED = "NodeResumed"
    NODE_QUIT = "NodeQuit"
    NODE_KICKED_OUT = "NodeKickedOut"
    NODE_SLASHED = "NodeSlashed"
    NODE_STAKE_REFUNDED = "NodeStakeRefunded"
    # TaskQueue
    TASK_QUEUED = "TaskQueued"
    TASK_DEQUEUED = "TaskDequeued"
    TASK_REMOVED = "TaskRemoved"
    # QoS
    TASK_SCORE_RECORDED = "TaskScoreRecorded"
    KICK_OUT_TRIGGERED = "KickOutTriggered"
    HISTORY_RESET = "HistoryReset"
    # Node and Task (Payouts)
    PAYMENT_DEFERRED = "PaymentDeferred"
    CREDIT_WITHDRAWN = "CreditWithdrawn"
