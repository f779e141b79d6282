"""The native task API: any task the network runs, with its chain-side progress."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from cluster.protocol.task import TaskType, TaskTypeName
from network.bridge.config import ModelSpec, ValidationName
from network.bridge.errors import BridgeError, not_found
from network.bridge.service import Bridge, BridgeDep, KeyDep
from network.bridge.tasks import BridgeTask
from network.json_body import ParsedJsonRoute

router = APIRouter(prefix="/v1/tasks", route_class=ParsedJsonRoute)


class NativeTaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_type: TaskTypeName
    task_args: str | dict[str, Any]  # a dict is serialized with json.dumps; a string is used as is
    vram_limit: int = Field(default=0, ge=0, le=2**20)  # GB: no card comes near a million
    fee_wei: int | None = Field(default=None, gt=0)  # default: the chain-priced fee
    validation: ValidationName | None = None  # default: the bridge's (config ``validation``)


def _record(bridge: Bridge, task_id: str) -> BridgeTask:
    record = bridge.manager.get(task_id)
    if record is None:
        raise not_found(f"No task '{task_id}' on this bridge", "task_not_found")
    return record


@router.post("", status_code=202)
async def create_task(request: NativeTaskRequest, bridge: BridgeDep, key: KeyDep) -> dict[str, Any]:
    args = request.task_args if isinstance(request.task_args, str) else json.dumps(request.task_args)
    model = ModelSpec(id=f"native-{request.task_type.name.lower()}", path="-", task_type=request.task_type,
                      fee_wei=request.fee_wei)  # fmt: skip
    record = await bridge.submit("native", model, args, key, request.vram_limit, request.validation)
    return bridge.view(record)


@router.get("/{task_id}")
async def get_task(task_id: str, bridge: BridgeDep, key: KeyDep) -> dict[str, Any]:
    return bridge.view(_record(bridge, task_id))


@router.get("/{task_id}/results/{index}")
async def get_result(task_id: str, index: int, bridge: BridgeDep, key: KeyDep) -> Response:
    record = _record(bridge, task_id)
    if record.status != "validated":
        raise BridgeError(409, f"task {task_id} is {record.status}: no result", code="task_not_ready")
    data = bridge.manager.store.result(task_id, index)
    if data is None:
        raise not_found(f"task {task_id} has {record.num_results} result files", "result_not_found")
    return Response(data, media_type="application/json" if record.task_type is TaskType.GPT else "image/png")


@router.get("/{task_id}/events")
async def task_events(task_id: str, bridge: BridgeDep, key: KeyDep) -> StreamingResponse:
    """Server-sent events: ``progress`` per chain event, ``status`` on a change, ``done`` at the end."""
    _record(bridge, task_id)

    async def stream() -> AsyncIterator[str]:
        sent, status = 0, None
        while True:
            record = _record(bridge, task_id)
            for event in record.events[sent:]:
                yield f"event: progress\ndata: {event.model_dump_json()}\n\n"
            sent = len(record.events)
            if record.status != status:
                status = record.status
                yield f"event: status\ndata: {json.dumps(bridge.view(record))}\n\n"
            if record.done:
                yield f"event: done\ndata: {json.dumps(bridge.view(record))}\n\n"
                return
            try:
                await bridge.manager.wait_change(task_id, 1.0)
            except asyncio.CancelledError:
                return

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
