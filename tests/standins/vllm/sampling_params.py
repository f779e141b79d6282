"""``vllm.SamplingParams``: the fields this project sets, with vLLM's names and defaults; anything else is
a TypeError, as with vLLM's own class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0  # 0: greedy
    top_k: int = -1  # -1 (or 0): off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    seed: int | None = None
