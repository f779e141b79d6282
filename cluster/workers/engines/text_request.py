"""What every text engine shares: the generation-config merge, the prompt, and the response (0.json).

Both engines go through these functions so that a GPT task means the same thing on either of them:
the same effective sampling parameters, the same prompt token ids, the same text and token counts.

Decisions (see docs/engines.md):
- ``do_sample=False``, or sampling at ``temperature == 0``, is greedy decoding (as in vLLM and OpenAI).
- Content ends before the first stop string (the stop string itself is not returned, as in vLLM and
  OpenAI) and is stripped of surrounding whitespace.
- ``completion_tokens`` is summed over the returned sequences; ``prompt_tokens`` counts the prompt once.
  A sequence's tokens run to and including the EOS token, or the token that completed a stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.gpt import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_NUM_RETURN_SEQUENCES,
    FinishReason,
    GPTGenerationConfig,
    GPTTaskArgs,
    GPTTaskResponse,
    Message,
    ResponseChoice,
    ResponseMessage,
    TextBlock,
    Usage,
    require_text_only,
)

# Fallbacks where neither the task nor the model sets a value: transformers' own generation defaults.
LIBRARY_DEFAULTS: dict[str, Any] = {
    "do_sample": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "min_p": None,
    "repetition_penalty": 1.0,
    "stop_strings": None,
}
# The engine's defaults, laid over the model's own generation config (PROTOCOL.md, Task types).
ENGINE_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
    "num_return_sequences": DEFAULT_NUM_RETURN_SEQUENCES,
}
GENERATION_KEYS = tuple(GPTGenerationConfig.model_fields)


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """The effective generation parameters of one task, every value concrete."""

    max_new_tokens: int
    num_return_sequences: int
    do_sample: bool
    num_beams: int
    temperature: float
    top_k: int
    top_p: float
    typical_p: float
    min_p: float | None
    repetition_penalty: float
    stop_strings: tuple[str, ...]

    def to_hf(self) -> dict[str, Any]:
        """Keyword arguments for a transformers ``GenerationConfig``."""
        values = asdict(self)
        values["stop_strings"] = list(self.stop_strings) or None
        return values


def model_generation_defaults(generation_config: Any) -> dict[str, Any]:
    """The generation keys a model's own ``generation_config`` sets (a GenerationConfig or a mapping)."""
    source = generation_config if isinstance(generation_config, Mapping) else vars(generation_config)
    return {key: source[key] for key in GENERATION_KEYS if source.get(key) is not None}


def merge_generation_config(
    model_defaults: Mapping[str, Any], task_config: GPTGenerationConfig | None
) -> GenerationParams:
    """Library fallbacks < the model's generation config < engine defaults < the task's non-null values."""
    task_values = task_config.non_null() if task_config else {}
    merged = {**LIBRARY_DEFAULTS, **model_defaults, **ENGINE_DEFAULTS, **task_values}
    stop_strings = merged["stop_strings"]
    if isinstance(stop_strings, str):  # generation_config.json may hold one string
        stop_strings = [stop_strings]
    if any(s == "" for s in stop_strings or ()):
        raise ArgumentsInvalid(
            "generation_config.stop_strings must not contain an empty string",
            ("generation_config.stop_strings",),
        )
    do_sample = bool(merged["do_sample"]) and float(merged["temperature"]) > 0.0
    params = GenerationParams(
        max_new_tokens=int(merged["max_new_tokens"]),
        num_return_sequences=int(merged["num_return_sequences"]),
        do_sample=do_sample,
        num_beams=int(merged["num_beams"]),
        temperature=float(merged["temperature"]) if do_sample else 1.0,
        top_k=int(merged["top_k"]),
        top_p=float(merged["top_p"]),
        typical_p=float(merged["typical_p"]),
        min_p=None if merged["min_p"] is None else float(merged["min_p"]),
        repetition_penalty=float(merged["repetition_penalty"]),
        stop_strings=tuple(stop_strings or ()),
    )
    _check_sequences(params)
    return params


def _check_sequences(params: GenerationParams) -> None:
    if not params.do_sample and params.num_return_sequences > params.num_beams:
        raise ArgumentsInvalid(
            f"num_return_sequences={params.num_return_sequences} needs do_sample=true (with temperature > 0) "
            f"or num_beams >= num_return_sequences (num_beams={params.num_beams}): greedy decoding has "
            "only one answer",
            ("generation_config.num_return_sequences",),
        )


def content_text(message: Message) -> str:
    """A message's content as text: null is "" (templates can test it), text blocks are joined with nothing
    between them, as the reference does (image blocks are refused before: ``require_text_only``)."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


def build_messages(args: GPTTaskArgs) -> list[dict[str, Any]]:
    """The messages as chat-template input, each content as text."""
    require_text_only(args)
    messages = []
    for message in args.messages:
        item = message.model_dump(exclude_none=True)
        item["content"] = content_text(message)
        messages.append(item)
    return messages


def build_prompt_ids(tokenizer: Any, args: GPTTaskArgs) -> list[int]:
    """The prompt token ids: the chat template (tools, generation prompt, the task's template_args), or
    the contents joined by "\n" for a model without one (template_args then have nothing to apply to)."""
    messages = build_messages(args)
    if getattr(tokenizer, "chat_template", None):
        template_args = {"add_generation_prompt": True, **(args.template_args or {})}
        try:
            text = tokenizer.apply_chat_template(messages, tools=args.tools, tokenize=False, **template_args)
        except Exception as exc:  # jinja2 TemplateError and friends: the messages break the template
            raise ArgumentsInvalid(
                f"messages do not fit the model's chat template: {exc}", ("messages",)
            ) from exc
        # NOTE: the template writes its own special tokens; adding BOS again would change the prompt.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer("\n".join(m["content"] for m in messages))["input_ids"]
    if not ids:
        raise ArgumentsInvalid("the prompt is empty after tokenization", ("messages",))
    return list(ids)


def check_context(prompt_ids: Sequence[int], context_tokens: int | None) -> None:
    """A prompt the model's context cannot hold is the task's error, at once (attention over it would
    only keep the workers busy past the task's deadline)."""
    if context_tokens is not None and len(prompt_ids) >= context_tokens:
        raise ArgumentsInvalid(
            f"the prompt is {len(prompt_ids)} tokens; the model's context holds {context_tokens}",
            ("messages",),
        )


@dataclass(frozen=True, slots=True)
class DecodedSequence:
    text: str
    num_tokens: int
    finish_reason: FinishReason


def _find_stop(text: str, stop_strings: Iterable[str]) -> int:
    """The index of the first stop string in ``text``, or -1."""
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(found, default=-1)


def _tokens_to_stop(body: Sequence[int], decode: Callable[[Sequence[int]], str], stops: Sequence[str]) -> int:
    """The fewest leading tokens whose text holds a stop string (binary search: containment is monotone)."""
    low, high = 1, len(body)
    while low < high:
        middle = (low + high) // 2
        if _find_stop(decode(body[:middle]), stops) >= 0:
            high = middle
        else:
            low = middle + 1
    return low


def finish_sequence(
    token_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    eos_token_ids: frozenset[int],
    stop_strings: Sequence[str],
) -> DecodedSequence:
    """One returned sequence: its text, its token count and why it ended.

    ``token_ids`` are the generated tokens; anything after the first EOS (padding of a batch) is ignored.
    """
    eos_at = next((i for i, token in enumerate(token_ids) if token in eos_token_ids), None)
    body = list(token_ids if eos_at is None else token_ids[:eos_at])
    text = decode(body)
    stop_at = _find_stop(text, stop_strings)
    if stop_at >= 0:
        return DecodedSequence(text[:stop_at].strip(), _tokens_to_stop(body, decode, stop_strings), "stop")
    if eos_at is not None:
        return DecodedSequence(text.strip(), eos_at + 1, "stop")
    return DecodedSequence(text.strip(), len(body), "length")


def build_response(
    model: str, num_prompt_tokens: int, sequences: Sequence[DecodedSequence]
) -> GPTTaskResponse:
    """The GPT response of PROTOCOL.md: one choice per sequence, usage summed over the sequences."""
    num_completion_tokens = sum(s.num_tokens for s in sequences)
    return GPTTaskResponse(
        model=model,
        choices=[
            ResponseChoice(finish_reason=s.finish_reason, message=ResponseMessage(content=s.text), index=i)
            for i, s in enumerate(sequences)
        ],
        usage=Usage(
            prompt_tokens=num_prompt_tokens,
            completion_tokens=num_completion_tokens,
            total_tokens=num_prompt_tokens + num_completion_tokens,
        ),
    )
