"""Faults that tests inject into a real farm, in one object that production code never fills.

Production passes ``NO_HOOKS``. A test sets what it needs:
- ``checkpoint``: called at the points of a round, or of a node's bring-up, where a crash is most
  instructive (the restart tests kill the process there);
- ``corrupt_slots``: node slots whose results the coordinator alters before committing (a dishonest or
  broken node, with the Ray pool not involved);
- ``corrupt_workers``: worker indices whose GPU returns altered results (what the consensus guard and a
  slash must catch).

An altered result is always ``corrupt_result``: the files are changed *and* the result bytes recomputed
from them, so the node commits and discloses a consistent but wrong result that consensus must catch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cluster.protocol.results import task_result
from cluster.protocol.task import TaskType

CORRUPTION_SEED = 0xBAD
Checkpoint = Callable[[str, str], None]  # (point, subject): ("before_commit", "task=12:round=1")


@dataclass(frozen=True)
class TestHooks:
    __test__ = False  # not a pytest test class, whatever its name

    checkpoint: Checkpoint | None = None
    corrupt_slots: frozenset[int] = frozenset()
    corrupt_workers: frozenset[int] = frozenset()

    def reached(self, point: str, subject: str) -> None:
        if self.checkpoint is not None:
            self.checkpoint(point, subject)


NO_HOOKS = TestHooks()


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


def corrupt_result(task_type: TaskType | int, files: list[bytes]) -> tuple[list[bytes], bytes]:
    """Altered files and the result bytes recomputed from them, as an honest node would compute them."""
    is_gpt = task_type == TaskType.GPT
    altered = [corrupt_gpt_file(files[0])] if is_gpt else [corrupt_png(f) for f in files]
    return altered, task_result(task_type, altered)
