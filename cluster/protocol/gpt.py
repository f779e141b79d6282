"""GPT task arguments and the GPT response (``0.json``), compatible with the Crynux gpt-task schema.

The arguments accept what Crynux's applications send (``TaskArgsModel``: unknown fields ignored, integral
floats for integers, content blocks, ``template_args``). Ranges the published schema leaves open are
closed here where a value outside them could only crash or hang a node (e.g. ``max_new_tokens <= 0``);
see docs/protocol-decisions.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from cluster.protocol.base import AS_INT, Int, StrictModel, TaskArgsModel
from cluster.protocol.errors import ArgumentsInvalid

Dtype = Literal["float16", "bfloat16", "float32", "auto"]
Role = Literal["system", "user", "assistant", "tool"]

# Engine defaults laid over the model's own generation config (PROTOCOL.md, Task types).
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_NUM_RETURN_SEQUENCES = 1
# A bound on what one task may ask for; the chain prices tasks by max_new_tokens ("cap").
MAX_NEW_TOKENS_LIMIT = 32_768
MAX_RETURN_SEQUENCES = 16
# apply_chat_template's own parameters: the engine sets them (or the task's own fields do). A task's
# template_args may set template variables (``enable_thinking``...), ``add_generation_prompt`` and
# ``continue_final_message``, nothing that changes what the call returns.
RESERVED_TEMPLATE_ARGS = (
    "chat_template", "conversation", "documents", "max_length", "padding", "return_assistant_tokens_mask",
    "return_dict", "return_tensors", "tokenize", "tokenizer_kwargs", "tools", "truncation",
)  # fmt: skip


class TextBlock(StrictModel):
    """A text part of a message's content; the parts' texts are joined with nothing between them."""

    type: Literal["text"]
    text: str = Field(min_length=1)


class ImageBlock(StrictModel):
    """An image part, for vision models, which this network does not serve yet (a task error). Its bytes
    are not decoded here: the reference checks them as strict base64, which a JSON Schema cannot say."""

    type: Literal["image"]
    base64: str = Field(min_length=1)


ContentBlock = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class Message(TaskArgsModel):
    role: Role
    content: str | list[ContentBlock] | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class GPTGenerationConfig(TaskArgsModel):
    """Every field is optional: a null or missing value leaves the model's own default in place."""

    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS_LIMIT), AS_INT] | None = None
    do_sample: bool | None = None
    num_beams: Annotated[int, Field(ge=1, le=16), AS_INT] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    typical_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: Annotated[int, Field(ge=0), AS_INT] | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)
    num_return_sequences: Annotated[int, Field(ge=1, le=MAX_RETURN_SEQUENCES), AS_INT] | None = None
    stop_strings: list[str] | None = Field(default=None, max_length=16)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)

    def non_null(self) -> dict[str, Any]:
        """The fields the task set, to lay over the engine's and the model's defaults."""
        return self.model_dump(exclude_none=True)


class GPTTaskArgs(TaskArgsModel):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    generation_config: GPTGenerationConfig | None = None
    # extra keyword arguments of the chat template (template variables such as enable_thinking)
    template_args: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"propertyNames": {"not": {"enum": list(RESERVED_TEMPLATE_ARGS)}}}
    )
    seed: Int = Field(default=0, ge=0, lt=2**63)
    dtype: Dtype = "auto"
    quantize_bits: Annotated[Literal[4, 8], AS_INT] | None = None

    @field_validator("template_args")
    @classmethod
    def _no_reserved_template_args(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        reserved = sorted(set(value or ()) & set(RESERVED_TEMPLATE_ARGS))
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: set by the engine, not by template_args")
        return value

    @property
    def max_new_tokens(self) -> int:
        """The token cap this task can use: the chain's ``cap`` for a GPT task."""
        if self.generation_config and self.generation_config.max_new_tokens is not None:
            return self.generation_config.max_new_tokens
        return DEFAULT_MAX_NEW_TOKENS


def require_text_only(args: GPTTaskArgs) -> None:
    """Image content blocks are valid arguments but need a vision model, which this network does not serve
    yet: ``ArgumentsInvalid`` naming the first one (the engine's task error, the bridge's 400)."""
    for index, message in enumerate(args.messages):
        for position, block in enumerate(message.content if isinstance(message.content, list) else ()):
            if isinstance(block, ImageBlock):
                field = f"messages.{index}.content.{position}"
                raise ArgumentsInvalid(
                    f"{field}: image content needs a vision model; none is served yet", (field,)
                )


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
