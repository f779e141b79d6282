"""Task arguments as an application uploads them: JSON text."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster.protocol.task import TaskType
from cluster.workers.messages import JobRequest


@contextmanager
def background_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a daemon thread: synchronous tests submit the pool's coroutines to it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pool-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def gpt_args_json(
    model: Path | str, *, seed: int = 0, content: str = "Hello, how are you?", **config: Any
) -> str:
    generation = {"max_new_tokens": 8, "do_sample": False, **config}
    return json.dumps(
        {
            "model": str(model),
            "messages": [{"role": "user", "content": content}],
            "seed": seed,
            "generation_config": generation,
        }
    )


def sd_args_json(model: Path | str, *, steps: int = 2, size: int = 64, num_images: int = 2) -> str:
    task_config = {
        "image_width": size,
        "image_height": size,
        "steps": steps,
        "seed": 7,
        "num_images": num_images,
        "safety_checker": False,
        "cfg": 5.0,
    }
    return json.dumps(
        {"base_model": str(model), "prompt": "a red fox in the snow", "task_config": task_config}
    )


def gpt_job(model: Path | str, **kwargs: Any) -> JobRequest:
    return JobRequest(TaskType.GPT, gpt_args_json(model, **kwargs))


def sd_job(model: Path | str, **kwargs: Any) -> JobRequest:
    return JobRequest(TaskType.SD, sd_args_json(model, **kwargs))
