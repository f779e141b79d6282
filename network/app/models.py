"""The typed values the application client hands back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from cluster.chain.contracts import Validation
from cluster.protocol.task import TaskType


class Submission(BaseModel):
    """A task created on chain for one request id, its arguments handed to the relay."""

    model_config = ConfigDict(frozen=True)
    request_id: str
    task_id: int
    task_type: TaskType
    task_hash: bytes
    fee_wei: int
    vram_limit: int
    cap: int
    block_number: int  # the block of createTask: where following the task's events starts
    tx_hash: str  # the createTask transaction
    validation: Validation = Validation.FULL  # as asked
    audit_rate: int = 1  # the N its fee was priced at; 1: created as a Full task

    @property
    def is_sampled(self) -> bool:
        return self.validation != Validation.FULL and self.audit_rate > 1


class TaskOutcome(BaseModel):
    """Where a task ended, folded from its Task-contract events.

    ``refund_wei`` and ``paid_to_nodes_wei`` count what was seen up to the moment ``wait`` returned: after
    an abort by error reports a slashed node's share can still come back to the creator later.
    """

    model_config = ConfigDict(frozen=True)
    task_id: int
    task_type: TaskType
    status: Literal["succeeded", "aborted"]
    reason: str | None  # the TaskAborted reason; None when the task succeeded
    fee_wei: int
    selected_nodes: tuple[str, ...]  # in round order; empty when the task never left the queue
    result: bytes | None  # the validated result bytes of TaskSuccess
    result_node: str | None
    results_uploaded: bool  # TaskResultUploaded seen: the result node reported the files on the relay
    refund_wei: int
    paid_to_nodes_wei: int
    block_number: int  # the last block read
    # Sampled audits (issue 28), from TaskSampled, TaskAuditDrawn and the settlements: FULL for a Full
    # task; ``audited`` None until the draw is read (always None for a Full task); ``first_node_caught``
    # the audit slashed the first node (its result was wrong: the whole fee comes back, in refund_wei
    # once seen)
    validation: Validation = Validation.FULL
    audit_rate: int | None = None
    audited: bool | None = None
    first_node_caught: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def sampled(self) -> bool:
        return self.validation != Validation.FULL
