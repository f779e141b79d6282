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

    @property
    def key(self) -> str:
        return f"task={self.task_id}:round={self.round}"

    @property
    def is_result_node(self) -> bool:
        return self.result_node is not None and self.result_node == self.node


class TaskCounts(BaseModel):
    """The farm's task rounds by step, the finished ones by outcome, the failed ones by failure code."""

    model_config = ConfigDict(frozen=True)

    by_step: dict[Step, int] = {}
    by_outcome: dict[Outcome, int] = {}
    by_failure: dict[FailureCode, int] = {}

    def at(self, step: Step) -> int:
        return self.by_step.get(step, 0)

    def ended(self, outcome: Outcome) -> int:
        return self.by_outcome.get(outcome, 0)

    def failed(self, code: FailureCode) -> int:
        return self.by_failure.get(code, 0)

    @property
    def num_unfinished(self) -> int:
        return sum(n for step, n in self.by_step.items() if step is not Step.DONE)
