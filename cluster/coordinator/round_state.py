"""What the coordinator knows of one round of a task run by one of the farm's nodes (``NodeTask``), the
steps a round goes through (``Step``), how it ended for the node (``Outcome``), and the farm's rounds
counted by both (``TaskCounts``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from cluster.failures import FailureCode


class Step(StrEnum):
    SELECTED = "selected"  # TaskStarted named one of our nodes
    EXECUTED = "executed"  # result, nonce and files are on disk; the commitment may or may not be sent
    ERROR_FOUND = "error_found"  # the task is invalid; the error report may or may not be sent
    COMMITTED = "committed"  # commitment (or error report) mined
    DISCLOSED = "disclosed"  # our result is disclosed on chain; waiting for the task's outcome
    UPLOADING = "uploading"  # we are the result node: files to the relay, then reportResultsUploaded
    DONE = "done"  # nothing left to do for this round


class Outcome(StrEnum):
    PENDING = ""
    PAID = "paid"
    SLASHED = "slashed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class NodeTask:
    task_id: int
    round: int
    node: str
    task_type: int
    task_hash: bytes
    step: Step
    deadline_chain_s: float  # its TaskStarted block time + the task timeout then: the contract's deadline
    started_chain_s: float | None = None  # that block time (chain time); None in rows of older versions
    cap: int | None = None  # what the fee paid for (TaskPending); None when the farm never saw it pending
    args_json: str | None = None
    result: bytes | None = None
    nonce: bytes | None = None
    num_files: int = 0
    error: str | None = None  # the task error's code and message, when we report one
    commitments_ready: bool = False
    result_node: str | None = None
    outcome: Outcome = Outcome.PENDING
    fee_earned: int = 0
    failure: str | None = None  # why this round stopped being driven (cluster.failures), for people
    failure_code: FailureCode | None = None  # the same, for metrics and scripts
    # A sampled task's (issue 28; docs/rounds.md "Sampled tasks"): its audit rate N (0: a full task), whether
    # its application reads the result only after the decision, and whether its audit started.
    audit_rate: int = 0
    result_after_audit: bool = False
    is_audited: bool = False

    @property
    def key(self) -> str:
        return f"task={self.task_id}:round={self.round}"

    @property
    def is_lone(self) -> bool:
        """The one node of a sampled task before any audit: it seals errors, and discloses or starts the
        audit as the draw says."""
        return self.audit_rate > 0 and self.round == 0 and not self.is_audited

    @property
    def awaits_draw(self) -> bool:
        """Committed alone: the draw is read from the second block after the commitment's."""
        return self.is_lone and self.step is Step.COMMITTED and self.commitments_ready

    @property
    def is_result_node(self) -> bool:
        return self.result_node is not None and self.result_node == self.node


class Sampling(StrEnum):
    """The farm's rounds of sampled tasks (issue 28), counted: its nodes as the lone node (``SAMPLED``),
    those whose draw said audit (``AUDITED``), those the audit slashed (``AUDIT_FAILED``: the first node's
    result differed from the auditors'), and the audits' rounds its nodes ran (``AUDIT_ROUNDS``)."""

    SAMPLED = "sampled"
    AUDITED = "audited"
    AUDIT_FAILED = "audit_failed"
    AUDIT_ROUNDS = "audit_rounds"


class TaskCounts(BaseModel):
    """The farm's task rounds by step, the finished ones by outcome, the failed ones by failure code, the
    sampled tasks' ones by what became of them."""

    model_config = ConfigDict(frozen=True)

    by_step: dict[Step, int] = {}
    by_outcome: dict[Outcome, int] = {}
    by_failure: dict[FailureCode, int] = {}
    by_sampling: dict[Sampling, int] = {}

    def sampled(self, kind: Sampling) -> int:
        return self.by_sampling.get(kind, 0)

    def at(self, step: Step) -> int:
        return self.by_step.get(step, 0)

    def ended(self, outcome: Outcome) -> int:
        return self.by_outcome.get(outcome, 0)

    def failed(self, code: FailureCode) -> int:
        return self.by_failure.get(code, 0)

    @property
    def num_unfinished(self) -> int:
        return sum(n for step, n in self.by_step.items() if step is not Step.DONE)
