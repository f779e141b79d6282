"""The bridge's state shared by the endpoints: config, task manager; paying for a task (fee, balance)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from pydantic import BaseModel

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.task import TaskType, TaskTypeName, parse_task_args
from network.app import SampledFeeTooHigh
from network.bridge.config import ApiKey, BridgeConfig, ModelSpec, ValidationName
from network.bridge.errors import BridgeError, bad_request
from network.bridge.keys import require_key
from network.bridge.manager import TaskManager
from network.bridge.prompt_size import PromptSizer
from network.bridge.tasks import BridgeTask, EventView, SpendRefused, Status


class TaskView(BaseModel):
    id: str
    object: Literal["task"] = "task"
    kind: str
    model: str
    task_type: TaskTypeName
    status: Status
    task_id: int | None  # the chain's task id, once created
    fee_wei: str | None  # decimal strings: wei amounts exceed JavaScript's integers
    validation: ValidationName
    selected_nodes: list[str]
    reason: str | None
    refund_wei: str
    num_results: int
    events: list[EventView]
    created_at: float
    deadline: float


class Bridge:
    def __init__(self, config: BridgeConfig, manager: TaskManager):
        self.config = config
        self.manager = manager
        self.prompts = PromptSizer()

    async def submit(
        self,
        kind: str,
        model: ModelSpec,
        task_args: str,
        key: ApiKey,
        vram_limit: int = 0,
        validation: ValidationName | None = None,
    ) -> BridgeTask:
        """Check the arguments, the fee, the wallet and the key's spending limits, then record and start the
        task (paid in the background). 400 for arguments or a fee over the cap, 402 for the wallet, 429
        for a key's limit: a request that cannot be paid ends here, never left retrying. A chat's prompt
        is counted as the nodes will count it: one their model cannot hold is a 400 here, not a fee lost.
        ``validation``: the request's, else the model's, else the bridge's default; a sampled fee above
        the network's bound is a 400 ``sampled_fee_too_high``."""
        validation = validation or model.validation or self.config.validation
        try:
            if kind == "chat":
                args = parse_task_args(TaskType.GPT, task_args)
                assert isinstance(args, GPTTaskArgs)
                await asyncio.to_thread(self.prompts.check, model, args)
            fee = await self.manager.fee_for(model, task_args, validation)
        except ArgumentsInvalid as exc:
            raise bad_request(f"invalid task arguments: {exc}", ",".join(exc.fields) or None) from None
        except SampledFeeTooHigh as exc:
            raise BridgeError(400, str(exc), param="validation", code="sampled_fee_too_high") from None
        if fee > self.config.max_fee_wei:
            raise BridgeError(
                400,
                f"The task would cost {fee} wei, above this bridge's cap of {self.config.max_fee_wei} wei "
                "per task: ask for fewer tokens or images (or a lower fee_wei).",
                code="fee_above_cap",
            )
        balance = await self.manager.balance()
        try:
            return self.manager.create(
                kind, model, task_args, fee, vram_limit, key=key, balance_wei=balance, validation=validation
            )
        except ArgumentsInvalid as exc:
            raise bad_request(f"invalid task arguments: {exc}", ",".join(exc.fields) or None) from None
        except SpendRefused as exc:
            raise BridgeError(exc.status, exc.message, type="insufficient_quota", code=exc.code) from None

    @staticmethod
    def view(record: BridgeTask) -> dict[str, Any]:
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
