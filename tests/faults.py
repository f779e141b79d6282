"""Wrong results that tests inject to see consensus, the card guard and the reference check catch them.

The product carries no corruption: tests wrap a job runner (``CorruptingRunner``) or a worker pool
(``CorruptingPool``) and alter the replies of the jobs they name. An altered result is always
``corrupt_result``: the files are changed *and* the result bytes recomputed from them, so the node commits
and discloses a consistent but wrong result that consensus must catch.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from cluster.protocol.cards import CardModel
from cluster.protocol.results import task_result
from cluster.protocol.task import TaskType
from cluster.workers.messages import JobReply, JobRequest

CORRUPTION_SEED = 0xBAD


def corrupt_gpt_file(data: bytes) -> bytes:
    """``0.json`` with every choice's text reversed and marked: still a valid response, a wrong one."""
    response = json.loads(data)
    for choice in response["choices"]:
        choice["message"]["content"] = choice["message"]["content"][::-1] + " [corrupt]"
    return json.dumps(response).encode("ascii")


def corrupt_png(data: bytes) -> bytes:
    """The image with its pixel bytes flipped by a fixed random mask: a valid PNG whose pHash is unrelated
    to the original's (a mere inversion would keep the hash of a smooth image: its DCT has ties)."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    mask = np.random.default_rng(CORRUPTION_SEED).integers(0, 256, pixels.shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels ^ mask).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_result(task_type: TaskType, files: list[bytes]) -> tuple[list[bytes], bytes]:
    """Altered files and the result bytes recomputed from them, as an honest node would compute them."""
    is_gpt = task_type == TaskType.GPT
    altered = [corrupt_gpt_file(files[0])] if is_gpt else [corrupt_png(f) for f in files]
    return altered, task_result(task_type, altered)


def corrupted(request: JobRequest, reply: JobReply) -> JobReply:
    if reply.error is not None:
        return reply
    files, result = corrupt_result(request.task_type, list(reply.files))
    return dataclasses.replace(reply, files=tuple(files), result=result)


class CorruptingRunner:
    """A job runner whose jobs for the named rounds return wrong results (a broken GPU of the farm)."""

    def __init__(self, inner: Any, rounds: set[int]):
        self.inner, self.rounds = inner, rounds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def run_job(self, card: CardModel, request: JobRequest) -> JobReply:
        reply = await self.inner.run_job(card, request)
        return corrupted(request, reply) if request.round in self.rounds else reply


class CorruptingPool:
    """A worker pool whose named worker returns wrong results (what the reference check must name)."""

    def __init__(self, pool: Any, is_corrupt: Callable[[str], bool]):
        self.pool, self.is_corrupt = pool, is_corrupt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)

    async def run_job_on(self, worker_id: str, request: JobRequest) -> JobReply:
        reply = await self.pool.run_job_on(worker_id, request)
        return corrupted(request, reply) if self.is_corrupt(worker_id) else reply
