"""Faults a test can configure on one worker at creation (``WorkerPool.create(faults={index: {...}})``).

A corrupt worker is a dishonest or broken GPU seen from outside: its files are wrong *and* its result is
recomputed from them, so the slot commits and discloses a consistent but wrong result, which consensus
must catch (the slot gets slashed) and the consensus guard must name.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, ValidationError

from cluster.protocol.hashes import gpt_result
from cluster.protocol.phash import sd_result
from cluster.protocol.task import TaskType
from cluster.workers.layout import PoolError

CORRUPTION_SEED = 0xBAD


class WorkerFaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    corrupt_results: bool = False
    """Return altered result files with the result recomputed from them."""


def checked_faults(faults: dict[int, dict], num_workers: int) -> dict[int, dict]:
    """``faults`` validated against the fault options and the rig's worker indices (0..num_workers-1)."""
    unknown = sorted(set(faults) - set(range(num_workers)))
    if unknown:
        raise PoolError(f"faults name workers {unknown}; this rig has workers 0..{num_workers - 1}")
    try:
        return {index: WorkerFaults.model_validate(f).model_dump() for index, f in faults.items()}
    except ValidationError as exc:
        raise PoolError(f"invalid faults: {exc}") from None


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


def corrupt_result(task_type: int, files: list[bytes]) -> tuple[list[bytes], bytes]:
    """Altered files and the result bytes recomputed from them, as an honest slot would compute them."""
    if task_type == TaskType.GPT:
        altered = [corrupt_gpt_file(files[0])]
        return altered, gpt_result(altered[0])
    altered = [corrupt_png(f) for f in files]
    return altered, sd_result(altered)
