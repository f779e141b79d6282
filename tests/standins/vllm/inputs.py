"""``vllm.inputs``: a prompt given as token ids (vLLM's is a TypedDict: a plain dict at run time)."""

from __future__ import annotations

from typing import TypedDict


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]
