"""A chat task's prompt counted as the nodes' engine will count it, before the bridge pays for the task.

The nodes refuse a prompt their model's context cannot hold, as the task's error after its fee is paid. A
count of the prompt's bytes missed what the chat template adds to every message (3,000 short messages
passed it, and the fee was lost), so the bridge builds the prompt exactly as the engine does
(``build_prompt_ids``: the model's tokenizer and chat template, the task's tools and template arguments)
against the context the engine reads from the model's config.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.gpt import GPTTaskArgs
from network.bridge.config import ModelSpec
from network.bridge.errors import BridgeError, bad_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Counter:
    tokenizer: Any
    context_tokens: int | None
    lock: threading.Lock  # a fast tokenizer refuses to be used by two threads at once


class PromptSizer:
    """Per model, its tokenizer and context, loaded on first use from the path the nodes load."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counter | None] = {}
        self._loading = threading.Lock()

    def check(self, model: ModelSpec, args: GPTTaskArgs) -> None:
        """A 400 unless the prompt fits the model's context. Blocking (tokenizing): call it in a thread.
        A model whose tokenizer cannot be loaded here is left to the byte bound (``gpt_task_args``)."""
        counter = self._counter(model)
        if counter is None or counter.context_tokens is None:
            return
        from cluster.workers.engines.text_request import build_prompt_ids  # imports torch: on first use

        try:
            with counter.lock:
                num_tokens = len(build_prompt_ids(counter.tokenizer, args))
        except ArgumentsInvalid as exc:  # the messages break the model's chat template
            raise bad_request(f"invalid task arguments: {exc}", "messages") from None
        if num_tokens >= counter.context_tokens:
            raise BridgeError(
                400,
                f"messages: the prompt is {num_tokens} tokens with the chat template applied; model "
                f"{model.id!r} holds {counter.context_tokens}",
                param="messages",
                code="context_length_exceeded",
            )

    def _counter(self, model: ModelSpec) -> _Counter | None:
        with self._loading:
            if model.id not in self._counters:
                self._counters[model.id] = _load(model)
            return self._counters[model.id]


def _load(model: ModelSpec) -> _Counter | None:
    try:
        from transformers import AutoConfig, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.path)
        context = model.context_tokens or getattr(
            AutoConfig.from_pretrained(model.path), "max_position_embeddings", None
        )
    except Exception as exc:  # a hub id out of reach, a path only the nodes have: no exact count here
        log.warning(
            "[bridge] no tokenizer for model=%s (%r): prompts bounded by their bytes only", model.id, exc
        )
        return None
    return _Counter(tokenizer, context, threading.Lock())
