"""Small factories of task arguments shared by the engine tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster import envs
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.sd import SDTaskArgs


def gpt_args(
    model: Path | str, *, seed: int = 0, content: str = "Hello, how are you today?", **generation: Any
) -> GPTTaskArgs:
    config = {"max_new_tokens": 12, **generation}
    return GPTTaskArgs.model_validate(
        {
            "model": str(model),
            "messages": [{"role": "user", "content": content}],
            "seed": seed,
            "generation_config": config,
            "dtype": envs.TEST_GPT_DTYPE.get(),  # "auto" (the model's own) unless gpu_check.sh sets one
        }
    )


def greedy_args(model: Path | str, **overrides: Any) -> GPTTaskArgs:
    return gpt_args(model, do_sample=False, **overrides)


def sd_args(model: Path | str, **overrides: Any) -> SDTaskArgs:
    task_config = {
        "image_width": 64,
        "image_height": 64,
        "steps": 2,
        "seed": 7,
        "num_images": 2,
        "safety_checker": False,
        "cfg": 5.0,
        **overrides.pop("task_config", {}),
    }
    return SDTaskArgs.model_validate(
        {"base_model": str(model), "prompt": "a red fox in the snow", "task_config": task_config, **overrides}
    )
