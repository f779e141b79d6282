"""The errors an application sees. Each one says what happened to the task and what it cost."""

from __future__ import annotations

from cluster.chain.contracts import AbortReason
from cluster.chain.revert import ContractRevert
from network.app.pricing import RUNS_PER_FULL_TASK, AuditTerms, fee_to_outbid


class ApplicationError(Exception):
    """Base of every error the application client raises on purpose."""


class ContractRejected(ApplicationError):
    """A transaction of the application (createTask, cancelTask) was refused by the contracts.

    ``name`` is the decoded custom error ("TaskFeeTooLow", "DeadlineNotPassed", ...); ``reason`` is the
    protocol's wording where it has one ("Task fee is too low"). ``revert.is_mined`` tells whether gas
    was spent (a revert found at gas estimation costs nothing).
    """

    def __init__(
        self, action: str, reason: str, revert: ContractRevert, *, suggested_fee_wei: int | None = None
    ):
        self.action = action
        self.reason = reason
        self.revert = revert
        self.name = revert.name
        self.suggested_fee_wei = suggested_fee_wei
        hint = f"; a fee of at least {suggested_fee_wei} wei would be accepted" if suggested_fee_wei else ""
        super().__init__(f"{action} refused: {reason} ({revert}){hint}")


class TaskAbortedError(ApplicationError):
    """The task ended without a result. ``refund_wei``: what the Task contract sent back so far."""

    def __init__(self, task_id: int, reason: str, refund_wei: int):
        self.task_id = task_id
        self.reason = reason
        self.refund_wei = refund_wei
        super().__init__(f"task {task_id} aborted: {reason} (refunded {refund_wei} wei)")


class TaskTimeout(ApplicationError, TimeoutError):
    """Waiting ran out before the task reached the awaited point; the task itself may still finish."""

    def __init__(self, task_id: int, timeout_s: float, waiting_for: str, last_event: str | None):
        self.task_id = task_id
        self.waiting_for = waiting_for
        self.last_event = last_event
        seen = f"last event {last_event}" if last_event else "no event seen yet"
        super().__init__(f"task {task_id}: no {waiting_for} within {timeout_s:.0f}s ({seen})")


class ResultMismatch(ApplicationError):
    """The files served for a task do not hash to the result validated on chain: they are refused."""

    def __init__(self, task_id: int, detail: str):
        self.task_id = task_id
        super().__init__(f"task {task_id}: result files refused: {detail}")


class ArgumentsNotDelivered(ApplicationError):
    """The relay did not take the task's arguments before the task's deadline: the task was cancelled and
    its fee refunded (``refund_wei``), rather than left holding three nodes until someone cancels it."""

    def __init__(self, task_id: int, refund_wei: int, detail: str):
        self.task_id, self.refund_wei = task_id, refund_wei
        super().__init__(
            f"task {task_id}: its arguments could not be uploaded before its deadline ({detail}); "
            f"cancelled, {refund_wei} wei refunded"
        )


class SampledFeeTooHigh(ApplicationError, ValueError):
    """A sampled task whose run pay exceeds ``nodeStake / (2 N)``: the contract would refuse it
    (``SampledFeeTooHigh``), so nothing is sent. A task worth that much asks for Full validation."""

    def __init__(self, fee_wei: int, run_pay_wei: int, max_run_pay_wei: int, audit_rate: int):
        self.fee_wei, self.run_pay_wei = fee_wei, run_pay_wei
        self.max_run_pay_wei, self.audit_rate = max_run_pay_wei, audit_rate
        super().__init__(
            f"a sampled task's fee of {fee_wei} wei pays its node {run_pay_wei} wei, above the network's "
            f"bound of {max_run_pay_wei} wei (nodeStake / (2 x audit rate {audit_rate})): ask for Full "
            "validation (validation=Validation.FULL) or a smaller task"
        )


class WrongChain(ApplicationError):
    """The RPC endpoint serves another chain than the deployment's: nothing is sent, nothing will be."""


class RequestConflict(ApplicationError, ValueError):
    """A request id was reused for a different task, fee or VRAM limit: request ids name one request."""


# The protocol's wording for the custom errors an application can meet; others show their decoded name.
REVERT_REASONS: dict[str, str] = {
    "TaskFeeTooLow": AbortReason.FEE_TOO_LOW,
    "FeeBelowMinimum": "Task fee is below the network's minimum",
    "TaskCannotRun": "No card model in the network can run a task with this VRAM limit",
    "ValueTooLarge": "Task fee, VRAM limit or cap out of range",
    "InvalidTaskType": "Unknown task type",
    "EstimateTooLarge": "Task cap out of range",
    "TaskNotFound": "Task not found (it ended, or never existed)",
    "NotTaskCreator": "Only the creator cancels a queued task",
    "NotAllowedToCancel": "Only the creator or a selected node cancels a started task",
    "DeadlineNotPassed": "Task deadline not passed yet",
    "SampledFeeTooHigh": "A sampled task's run pay exceeds nodeStake / (2 x audit rate): ask for Full",
    "InvalidValidation": "Unknown validation",
}


def rejected(action: str, revert: ContractRevert, sampled: AuditTerms | None = None) -> ContractRejected:
    """The application's error for a refused transaction, in the protocol's wording where it has one.

    ``sampled``: the terms a sampled task was priced at. The queue ranks a sampled task by three times
    its run pay, so the fee suggested to outbid the queue is the sampled fee of that run pay."""
    name = revert.name or ""
    if name == "Error":  # a require() string
        reason = str(revert.error_args.get("message", ""))
    else:
        reason = REVERT_REASONS.get(name, name or "reverted without a reason")
    suggested = None
    if name == "TaskFeeTooLow":
        a = revert.error_args
        suggested = fee_to_outbid(a["estimatedMs"], a["lowestFee"], a["lowestEstimatedMs"])
        if sampled is not None:
            suggested = sampled.sampled_fee(-(-suggested // RUNS_PER_FULL_TASK))
    return ContractRejected(action, reason, revert, suggested_fee_wei=suggested)
