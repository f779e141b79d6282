"""The bridge's state shared by the endpoints: config, task manager; paying for a task (fee, balance)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import BaseModel

from cluster.protocol.errors import ArgumentsInvalid
from network.bridge.config import ApiKey, BridgeConfig, ModelSpec
from network.bridge.errors import BridgeError, bad_request
from network.bridge.keys import require_key
from network.bridge.manager import TaskManager
from network.bridge.tasks import Status, TaskEvent, TaskRecord


class TaskView(BaseModel):
    id: str
    object: Literal["task"] = "task"
    kind: str
    model: str
    task_type: Literal["gpt", "sd"]
    status: Status
    task_id: int | None  # the chain's task id, once created
    fee_wei: str | None  # decimal strings: wei amounts exceed JavaScript's integers
    selected_nodes: list[str]
    reason: str | None
    refund_wei: str
    num_results: int
    events: list[TaskEvent]
    created_at: float
    deadline: float


class Bridge:
    def __init__(self, config: BridgeConfig, manager: TaskManager):
        self.config = config
        self.manager = manager

    async def submit(self, kind: str, model: ModelSpec, task_args: str, vram_limit: int = 0) -> TaskRecord:
        """Check the arguments and the wallet, then record and start the task (paid in the background)."""
        try:
            fee = await self.manager.fee_for(model, task_args)
        except ArgumentsInvalid as exc:
            raise bad_request(f"invalid task arguments: {exc}", ",".join(exc.fields) or None) from None
        balance = await self.manager.balance()
        if balance < fee + self.config.gas_reserve_wei:
            raise BridgeError(
                402,
                f"The bridge's wallet is too low to pay for this task: it holds {balance} wei, the task "
                f"costs {fee} wei plus a gas reserve of {self.config.gas_reserve_wei} wei. "
                "The bridge operator must top it up.",
                type="insufficient_quota",
                code="insufficient_funds",
            )
        try:
            return self.manager.create(kind, model, task_args, fee, vram_limit)
        except ArgumentsInvalid as exc:
            raise bad_request(f"invalid task arguments: {exc}", ",".join(exc.fields) or None) from None

    @staticmethod
    def view(record: TaskRecord) -> dict[str, Any]:
        data = record.model_dump()
        data["fee_wei"] = None if record.fee_wei is None else str(record.fee_wei)
        data["refund_wei"] = str(record.refund_wei)
        data.pop("task_args")
        data.pop("vram_limit")
        return TaskView.model_validate(data).model_dump()


def bridge_of(request: Request) -> Bridge:
    return request.app.state.bridge


BridgeDep = Annotated[Bridge, Depends(bridge_of)]
KeyDep = Annotated[ApiKey, Depends(require_key)]
