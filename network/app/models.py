"""The typed values the application client hands back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

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

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"
