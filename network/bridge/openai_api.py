"""The OpenAI-compatible endpoints: chat completions (plain and streamed), image generations, models."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from cluster.protocol.task import TaskType
from network.bridge.config import ApiKey, ModelSpec, ValidationName
from network.bridge.errors import BridgeError, bad_request, not_found
from network.bridge.service import Bridge, BridgeDep, KeyDep
from network.bridge.tasks import BridgeTask
from network.json_body import ParsedJsonRoute

router = APIRouter(prefix="/v1", route_class=ParsedJsonRoute)
NO_RETRY = {"x-should-retry": "false"}  # a retry would pay for a second task: the openai client honours it


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None  # a string, or OpenAI's content parts
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def task_message(self, index: int) -> dict[str, Any]:
        """The message as GPT task arguments take it: text parts become text blocks, as Crynux's bridge
        does; any other part (an image) is a 400 while no vision model is served."""
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            blocks = []
            for position, part in enumerate(self.content):
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(
                        f"messages[{index}].content[{position}]: only text parts are served (no vision model "
                        f"on this network yet), got type {part.get('type')!r}",
                        f"messages.{index}.content.{position}",
                    )
                blocks.append({"type": "text", "text": part["text"]})
            message["content"] = blocks
        return message


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    validation: ValidationName | None = None  # not OpenAI's: the openai client sends it in extra_body


class ImageRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=10)
    size: str = "512x512"
    seed: int | None = Field(default=None, ge=0, lt=2**31)
    response_format: Literal["b64_json"] = "b64_json"
    validation: ValidationName | None = None  # not OpenAI's: the openai client sends it in extra_body


# No tokenizer's token is longer than this many UTF-8 bytes: a prompt's bytes over it are fewer than its
# tokens, so the check below never refuses a prompt that fits (the nodes check exactly).
MAX_BYTES_PER_TOKEN = 32


def check_prompt_fits(request: ChatCompletionRequest, model: ModelSpec) -> None:
    """A 400 for a prompt the model's context cannot hold, before a task is paid for (its fee depends on
    max_tokens only; a 1 MiB prompt kept a card model's workers busy past the task's deadline)."""
    if model.context_tokens is None:
        return
    texts = [m.content if isinstance(m.content, str) else json.dumps(m.content) for m in request.messages]
    at_least = sum(len((t or "").encode()) for t in texts) // MAX_BYTES_PER_TOKEN
    if at_least >= model.context_tokens:
        holds = f"model {model.id!r} holds {model.context_tokens}"
        message = f"messages: the prompt is at least {at_least} tokens; {holds}"
        raise bad_request(message, "messages", code="context_length_exceeded")


def gpt_task_args(request: ChatCompletionRequest, model: ModelSpec) -> str:
    """OpenAI parameters -> GPT task arguments (PROTOCOL.md): the exact JSON text hashed and uploaded."""
    check_prompt_fits(request, model)
    config: dict[str, Any] = dict(model.defaults)
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None:
        config["max_new_tokens"] = max_tokens
    if request.n is not None:
        config["num_return_sequences"] = request.n
    if request.stop is not None:
        config["stop_strings"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.temperature is not None:
        config["do_sample"] = request.temperature > 0
        if request.temperature > 0:
            config["temperature"] = request.temperature
    if request.top_p is not None:
        config["top_p"] = request.top_p
    args: dict[str, Any] = {
        "model": model.path,
        "messages": [m.task_message(i) for i, m in enumerate(request.messages)],
        "seed": request.seed or 0,
        "generation_config": config or None,
    }
    if request.tools:
        args["tools"] = request.tools
    return json.dumps(args)


def sd_task_args(request: ImageRequest, model: ModelSpec) -> str:
    match = re.fullmatch(r"(\d{2,4})x(\d{2,4})", request.size)
    if not match or any(int(v) % 8 for v in match.groups()):
        raise bad_request(f"size {request.size!r}: expected 'WxH', multiples of 8 (e.g. '512x512')", "size")
    width, height = (int(v) for v in match.groups())
    config = {**model.defaults, "image_width": width, "image_height": height, "num_images": request.n}
    config["seed"] = request.seed if request.seed is not None else 0
    return json.dumps({"base_model": model.path, "prompt": request.prompt, "task_config": config})


def chat_completion(record_id: str, model_id: str, created: int, response: dict[str, Any]) -> dict[str, Any]:
    """The validated 0.json as an OpenAI ChatCompletion."""
    choices = [
        {
            "index": c["index"],
            "message": {"role": "assistant", "content": c["message"]["content"]},
            "finish_reason": c["finish_reason"],
            "logprobs": None,
        }
        for c in response["choices"]
    ]
    return {
        "id": f"chatcmpl-{record_id}",
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "choices": choices,
        "usage": response["usage"],
    }


def _model(bridge: Bridge, model_id: str | None, task_type: TaskType) -> ModelSpec:
    model = bridge.config.model(model_id) if model_id else bridge.config.first_model(task_type)
    if model is None:
        raise not_found(f"The model '{model_id}' does not exist", "model_not_found")
    if model.task_type is not task_type:
        what = "a chat model" if task_type is TaskType.GPT else "an image model"
        raise bad_request(f"The model '{model.id}' is not {what}", "model", "model_not_supported")
    return model


async def _validated(
    bridge: Bridge,
    kind: str,
    model: ModelSpec,
    task_args: str,
    key: ApiKey,
    validation: ValidationName | None = None,
) -> BridgeTask:
    """Pay for one task and wait until it is validated; an aborted or failed task is a 502 in OpenAI's
    shape."""
    record = await bridge.submit(kind, model, task_args, key, validation=validation)
    record = await bridge.manager.wait_done(record.id)
    if record.status != "validated":
        raise BridgeError(
            502,
            f"task {record.id} {record.status}: {record.reason}",
            type="server_error",
            code=f"task_{record.status}",
            headers=NO_RETRY,
        )
    return record


async def run_chat(bridge: Bridge, request: ChatCompletionRequest, key: ApiKey) -> tuple[str, dict[str, Any]]:
    """Pay for and wait on one chat task: its bridge id and its 0.json response."""
    model = _model(bridge, request.model, TaskType.GPT)
    record = await _validated(bridge, "chat", model, gpt_task_args(request, model), key, request.validation)
    data = bridge.manager.store.result(record.id, 0)
    if data is None:
        raise BridgeError(
            502, f"task {record.id}: its result file is missing", type="server_error", headers=NO_RETRY
        )
    return record.id, json.loads(data)


@router.get("/models")
async def list_models(bridge: BridgeDep, key: KeyDep) -> dict:
    """Model names and what they cost; never where the operator keeps them (``ModelSpec.path``)."""
    return {
        "object": "list",
        "data": [
            {"id": m.id, "object": "model", "created": 0, "owned_by": "helium",
             **m.model_dump(include={"task_type", "fee_wei", "vram_limit"}),
             "validation": m.validation or bridge.config.validation}
            for m in bridge.config.models
        ],
    }  # fmt: skip


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: ChatCompletionRequest, bridge: BridgeDep, key: KeyDep
) -> dict[str, Any] | StreamingResponse:
    created = int(time.time())
    if not request.stream:
        record_id, response = await run_chat(bridge, request, key)
        return chat_completion(record_id, request.model, created, response)
    # Validate and pay before the stream starts, so errors keep their status code.
    model = _model(bridge, request.model, TaskType.GPT)
    record = await bridge.submit(
        "chat", model, gpt_task_args(request, model), key, validation=request.validation
    )

    async def chunks() -> AsyncIterator[str]:
        done = await bridge.manager.wait_done(record.id)
        data = bridge.manager.store.result(done.id, 0)
        if done.status != "validated" or data is None:
            error = {
                "message": f"task {done.status}: {done.reason}",
                "type": "server_error",
                "code": f"task_{done.status}",
            }
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        completion = chat_completion(done.id, request.model, created, json.loads(data))
        base = {"id": completion["id"], "object": "chat.completion.chunk", "created": created,
                "model": request.model}  # fmt: skip
        for choice in completion["choices"]:
            delta = {"role": "assistant", "content": choice["message"]["content"]}
            first = {"index": choice["index"], "delta": delta, "finish_reason": None}
            yield f"data: {json.dumps({**base, 'choices': [first]})}\n\n"
            last = {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
            yield f"data: {json.dumps({**base, 'choices': [last]})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream", headers={"X-Bridge-Task": record.id})


@router.post("/images/generations")
async def image_generations(request: ImageRequest, bridge: BridgeDep, key: KeyDep) -> dict[str, Any]:
    model = _model(bridge, request.model, TaskType.SD)
    record = await _validated(bridge, "image", model, sd_task_args(request, model), key, request.validation)
    images = [bridge.manager.store.result(record.id, i) or b"" for i in range(record.num_results)]
    return {
        "created": int(record.created_at),
        "data": [{"b64_json": base64.b64encode(i).decode()} for i in images],
    }


@router.post("/chat/tasks", status_code=202)
async def chat_task(request: ChatCompletionRequest, bridge: BridgeDep, key: KeyDep) -> dict[str, Any]:
    """The chat page's call: start a chat task and return at once (follow it with /v1/tasks/{id}/events)."""
    model = _model(bridge, request.model, TaskType.GPT)
    record = await bridge.submit(
        "chat", model, gpt_task_args(request, model), key, validation=request.validation
    )
    return bridge.view(record)
