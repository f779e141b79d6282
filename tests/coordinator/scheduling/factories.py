"""Task arguments as an application uploads them (JSON text), and jobs made of them (parsed once)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster.protocol.task import TaskType, parse_task_args
from cluster.workers.messages import JobRequest

JOB_TIMEOUT_S = 60.0


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


def job(task_type: TaskType, args_json: str, *, timeout_s: float = JOB_TIMEOUT_S) -> JobRequest:
    """A job of these arguments, due ``timeout_s`` from now."""
    return JobRequest(parse_task_args(task_type, args_json), time.time() + timeout_s)


def gpt_job(model: Path | str, *, timeout_s: float = JOB_TIMEOUT_S, **kwargs: Any) -> JobRequest:
    return job(TaskType.GPT, gpt_args_json(model, **kwargs), timeout_s=timeout_s)


def sd_job(model: Path | str, *, timeout_s: float = JOB_TIMEOUT_S, **kwargs: Any) -> JobRequest:
    return job(TaskType.SD, sd_args_json(model, **kwargs), timeout_s=timeout_s)
