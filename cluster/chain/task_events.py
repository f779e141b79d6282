"""The Task contract's events as typed values: the one decoder the coordinator, the relay and the
application client read the chain through.

``task_event(chain_event)`` turns a decoded log (``cluster.chain.events.ChainEvent``, whose ``args`` carry
the ABI's names) into one of the frozen classes below, or None for an event no consumer needs (the
owner's settings, the wiring). The three per-node settlement events become one class,
``TaskNodeSettled``, whose ``outcome`` says which it was. Every typed event keeps its source as ``raw``:
the bridge shows chain events to its users under their ABI names.

``timing_event`` types the two owner settings a node's rounds depend on (``TaskTimeoutSet``,
``ArgumentsWaitSet``): the coordinator follows them instead of reading the contract per round. A task's
own deadline moves by its ``TaskDeadlineMoved`` events (``DeadlineMoved``), which say where to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from cluster.chain.contracts import AbortReason, Events
from cluster.chain.events import ChainEvent
from cluster.protocol.task import TaskType


class NodeOutcome(StrEnum):
    """How one selected node left a task (TaskNodeSuccess, TaskNodeSlashed, TaskNodeCancelled)."""

    PAID = "paid"
    SLASHED = "slashed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEvent:
    """What every Task event has: the task it is about and where it stands in the chain."""

    NAME: ClassVar[str] = ""
    task_id: int
    block_number: int
    log_index: int
    raw: ChainEvent = field(repr=False, compare=False)

    @property
    def block_time_s(self) -> int | None:
        """The timestamp of the block that carries the event."""
        return self.raw.block_time_s

    @property
    def name(self) -> str:
        """The event's name in the contract's ABI."""
        return self.NAME

    @property
    def position(self) -> tuple[int, int]:
        return self.block_number, self.log_index


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskPending(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_PENDING
    task_type: TaskType
    creator: str
    task_hash: bytes
    vram_limit: int
    cap: int
    fee_wei: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStarted(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_STARTED
    task_type: TaskType
    creator: str
    node: str  # the selected node
    task_hash: bytes
    round: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentSubmitted(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_RESULT_COMMITMENT_SUBMITTED
    round: int
    node: str
    commitment: bytes  # the seal: the relay checks a sampled node's early upload against it


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReported(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_ERROR_REPORTED
    round: int
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitmentsReady(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_RESULT_COMMITMENTS_READY


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultDisclosed(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_RESULT_DISCLOSED
    round: int
    node: str
    result: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSuccess(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_SUCCESS
    result: bytes
    result_node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultUploaded(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_RESULT_UPLOADED


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskAborted(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_ABORTED
    reason: str  # as emitted: one of AbortReason's values on today's contracts

    @property
    def is_cancel(self) -> bool:
        """Cancelled past its deadline (or while queued), as opposed to decided without a result."""
        return self.reason == AbortReason.CANCELLED


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskNodeSettled(TaskEvent):
    """One selected node's part of a task ended: paid its share, slashed, or cancelled."""

    outcome: NodeOutcome
    node: str
    fee_wei: int  # paid to the node; 0 unless PAID

    @property
    def name(self) -> str:
        return _SETTLEMENT_NAMES[self.outcome]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeRefunded(TaskEvent):
    NAME: ClassVar[str] = Events.TASK_FEE_REFUNDED
    creator: str
    amount_wei: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NoArgumentsReported(TaskEvent):
    """A selected node said the task's arguments never reached it; the second report aborts the task."""

    NAME: ClassVar[str] = Events.TASK_NO_ARGUMENTS_REPORTED
    round: int
    node: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NoArgumentsRefuted(TaskEvent):
    """The relay's receipt showed the arguments stored (at ``stored_at_s``, its clock): the reporters are
    slashed and the task aborted ("Task arguments report refuted")."""

    NAME: ClassVar[str] = Events.TASK_NO_ARGUMENTS_REFUTED
    stored_at_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlineMoved(TaskEvent):
    """The task's deadline is now ``deadline_s`` (chain time): a step the nodes could not foresee (the last
    commitment, the success, the second "no arguments" report) leaves the next one the response window."""

    NAME: ClassVar[str] = Events.TASK_DEADLINE_MOVED
    deadline_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueRentPaid(TaskEvent):
    """A task that left the queue (started, cancelled, evicted) paid the treasury for its time there."""

    NAME: ClassVar[str] = Events.QUEUE_RENT_PAID
    treasury: str
    amount_wei: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCompensated(TaskEvent):
    """A node that reported the arguments missing was paid for the wait (before its round's end)."""

    NAME: ClassVar[str] = Events.TASK_NODE_COMPENSATED
    node: str
    amount_wei: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSampled(TaskEvent):
    """The task goes to one node and is audited by two more 1 time in ``audit_rate`` (issue 28); emitted
    right after its TaskPending. ``result_after_audit``: the relay serves the result after the decision."""

    NAME: ClassVar[str] = Events.TASK_SAMPLED
    audit_rate: int
    result_after_audit: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditDrawn(TaskEvent):
    """The draw of a sampled task was read (at its node's disclosure, its audit's start, or a cancel)."""

    NAME: ClassVar[str] = Events.TASK_AUDIT_DRAWN
    is_audited: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditStarted(TaskEvent):
    """Two more nodes run a sampled task as its rounds 1 and 2 (their TaskStarted events come first, with
    zero hashes: the task's hash is TaskPending's)."""

    NAME: ClassVar[str] = Events.TASK_AUDIT_STARTED
    first_node: str
    auditors: tuple[str, str]


_SETTLEMENT_NAMES = {
    NodeOutcome.PAID: Events.TASK_NODE_SUCCESS,
    NodeOutcome.SLASHED: Events.TASK_NODE_SLASHED,
    NodeOutcome.CANCELLED: Events.TASK_NODE_CANCELLED,
}

_Builder = Callable[[dict[str, Any]], dict[str, Any]]
_BUILDERS: dict[str, tuple[type[TaskEvent], _Builder]] = {
    Events.TASK_PENDING: (TaskPending, lambda a: {
        "task_type": TaskType(a["taskType"]), "creator": a["creator"], "task_hash": bytes(a["taskHash"]),
        "vram_limit": a["vramLimit"], "cap": a["cap"], "fee_wei": a["fee"],
    }),
    Events.TASK_STARTED: (TaskStarted, lambda a: {
        "task_type": TaskType(a["taskType"]), "creator": a["creator"], "node": a["selectedNode"],
        "task_hash": bytes(a["taskHash"]), "round": a["round"],
    }),
    Events.TASK_RESULT_COMMITMENT_SUBMITTED: (CommitmentSubmitted, lambda a: {
        "round": a["round"], "node": a["node"], "commitment": bytes(a["commitment"]),
    }),
    Events.TASK_ERROR_REPORTED: (ErrorReported, lambda a: {"round": a["round"], "node": a["node"]}),
    Events.TASK_RESULT_COMMITMENTS_READY: (CommitmentsReady, lambda a: {}),
    Events.TASK_RESULT_DISCLOSED: (ResultDisclosed, lambda a: {
        "round": a["round"], "node": a["node"], "result": bytes(a["result"]),
    }),
    Events.TASK_SUCCESS: (TaskSuccess, lambda a: {
        "result": bytes(a["result"]), "result_node": a["resultNode"],
    }),
    Events.TASK_RESULT_UPLOADED: (ResultUploaded, lambda a: {}),
    Events.TASK_ABORTED: (TaskAborted, lambda a: {"reason": a["reason"]}),
    Events.TASK_NODE_SUCCESS: (TaskNodeSettled, lambda a: {
        "outcome": NodeOutcome.PAID, "node": a["node"], "fee_wei": a["fee"],
    }),
    Events.TASK_NODE_SLASHED: (TaskNodeSettled, lambda a: {
        "outcome": NodeOutcome.SLASHED, "node": a["node"], "fee_wei": 0,
    }),
    Events.TASK_NODE_CANCELLED: (TaskNodeSettled, lambda a: {
        "outcome": NodeOutcome.CANCELLED, "node": a["node"], "fee_wei": 0,
    }),
    Events.TASK_FEE_REFUNDED: (FeeRefunded, lambda a: {"creator": a["creator"], "amount_wei": a["amount"]}),
    Events.TASK_NO_ARGUMENTS_REPORTED: (NoArgumentsReported, lambda a: {
        "round": a["round"], "node": a["node"],
    }),
    Events.TASK_NODE_COMPENSATED: (NodeCompensated, lambda a: {"node": a["node"], "amount_wei": a["amount"]}),
    Events.TASK_NO_ARGUMENTS_REFUTED: (NoArgumentsRefuted, lambda a: {"stored_at_s": a["storedAt"]}),
    Events.TASK_DEADLINE_MOVED: (DeadlineMoved, lambda a: {"deadline_s": a["deadline"]}),
    Events.QUEUE_RENT_PAID: (QueueRentPaid, lambda a: {"treasury": a["treasury"], "amount_wei": a["amount"]}),
    Events.TASK_SAMPLED: (TaskSampled, lambda a: {
        "audit_rate": a["auditRate"], "result_after_audit": a["resultAfterAudit"],
    }),
    Events.TASK_AUDIT_DRAWN: (AuditDrawn, lambda a: {"is_audited": a["isAudited"]}),
    Events.TASK_AUDIT_STARTED: (AuditStarted, lambda a: {
        "first_node": a["firstNode"], "auditors": (a["auditor1"], a["auditor2"]),
    }),
}  # fmt: skip


def task_event(event: ChainEvent) -> TaskEvent | None:
    """The typed form of a Task contract event; None for events that are not about one task."""
    known = _BUILDERS.get(event.name) if event.contract == "Task" else None
    if known is None:
        return None
    cls, fields = known
    return cls(
        task_id=event.args["taskId"],
        block_number=event.block_number,
        log_index=event.log_index,
        raw=event,
        **fields(event.args),
    )


def task_events(events: list[ChainEvent]) -> list[TaskEvent]:
    """The typed Task events of a page, in its (chain) order."""
    return [typed for event in events if (typed := task_event(event)) is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskTimeoutSet:
    """The owner changed the task timeout: it applies to tasks started afterwards."""

    task_timeout_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgumentsWaitSet:
    """The owner changed how long nodes wait for arguments before they may report them missing."""

    arguments_wait_s: int
    compensation_bps: int


def timing_event(event: ChainEvent) -> TaskTimeoutSet | ArgumentsWaitSet | None:
    """The typed form of a Task contract's timing setting; None for any other event."""
    if event.contract != "Task":
        return None
    if event.name == Events.TASK_TIMEOUT_SET:
        return TaskTimeoutSet(task_timeout_s=event.args["taskTimeout"])
    if event.name == Events.ARGUMENTS_WAIT_SET:
        return ArgumentsWaitSet(
            arguments_wait_s=event.args["argumentsWait"], compensation_bps=event.args["compensationBps"]
        )
    return None
