"""GPT task arguments and the GPT response (``0.json``), compatible with the Crynux gpt-task schema.

Ranges the published schema leaves open are closed here where a value outside them could only crash
or hang a node (e.g. ``max_new_tokens <= 0``); see docs/protocol-decisions.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cluster.protocol.base import StrictModel

Dtype = Literal["float16", "bfloat16", "float32", "auto"]
Role = Literal["system", "user", "assistant", "tool"]

# Engine defaults laid over the model's own generation config (PROTOCOL.md, Task types).
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_NUM_RETURN_SEQUENCES = 1
# A bound on what one task may ask for; the chain prices tasks by max_new_tokens ("cap").
MAX_NEW_TOKENS_LIMIT = 32_768
MAX_RETURN_SEQUENCES = 16


class Message(StrictModel):
    role: Role
    content: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class GPTGenerationConfig(StrictModel):
    """Every field is optional: a null or missing value leaves the model's own default in place."""

    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS_LIMIT)
    do_sample: bool | None = None
    num_beams: int | None = Field(default=None, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    typical_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)
    num_return_sequences: int | None = Field(default=None, ge=1, le=MAX_RETURN_SEQUENCES)
    stop_strings: list[str] | None = Field(default=None, max_length=16)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)

    def non_null(self) -> dict[str, Any]:
        """The fields the task set, to lay over the engine's and the model's defaults."""
        return self.model_dump(exclude_none=True)


class GPTTaskArgs(StrictModel):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    generation_config: GPTGenerationConfig | None = None
    seed: int = Field(default=0, ge=0, lt=2**63)
    dtype: Dtype = "auto"
    quantize_bits: Literal[4, 8] | None = None

    @property
    def max_new_tokens(self) -> int:
        """The token cap this task can use: the chain's ``cap`` for a GPT task."""
        if self.generation_config and self.generation_config.max_new_tokens is not None:
            return self.generation_config.max_new_tokens
        return DEFAULT_MAX_NEW_TOKENS


# --- the response: the result file 0.json. Field order is the byte order of 0.json: never reorder. ---

FinishReason = Literal["stop", "length"]


class ResponseMessage(StrictModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ResponseChoice(StrictModel):
    finish_reason: FinishReason
    message: ResponseMessage
    index: int = Field(ge=0)


class Usage(StrictModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class GPTTaskResponse(StrictModel):
    model: str
    choices: list[ResponseChoice] = Field(min_length=1)
    usage: Usage
