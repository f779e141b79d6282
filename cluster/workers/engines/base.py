"""The two engine interfaces and their results. An engine knows nothing of the chain, the relay or Ray.

``run`` takes validated task arguments and returns the result files with their on-chain result bytes,
or raises a ``TaskExecutionError`` of the taxonomy (cluster.protocol.errors); nothing else escapes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.protocol.errors import TaskExecutionError
from cluster.protocol.gpt import GPTTaskArgs, GPTTaskResponse
from cluster.protocol.hashes import gpt_response_bytes, gpt_result
from cluster.protocol.phash import sd_result
from cluster.protocol.sd import SDTaskArgs


@dataclass(frozen=True, slots=True)
class TextResult:
    response: GPTTaskResponse

    @property
    def files(self) -> list[bytes]:
        """The result files in index order: ``0.json`` alone."""
        return [gpt_response_bytes(self.response)]

    @property
    def result(self) -> bytes:
        """The bytes committed on chain: sha256 of ``0.json``."""
        return gpt_result(self.files[0])


@dataclass(frozen=True, slots=True)
class ImageResult:
    images: tuple[bytes, ...]  # PNG bytes, index order

    @property
    def files(self) -> list[bytes]:
        return list(self.images)

    @property
    def result(self) -> bytes:
        """The bytes committed on chain: each image's pHash, concatenated."""
        return sd_result(list(self.images))


class TextEngine(ABC):
    """Runs GPT tasks. Implementations: transformers (reference, CPU/CUDA/MPS) and vLLM (GPU farms)."""

    name: str

    @abstractmethod
    def run(self, args: GPTTaskArgs) -> TextResult:
        """Run one task; its bytes must not depend on what else this engine ran before or runs beside it."""

    def run_many(self, tasks: Sequence[GPTTaskArgs]) -> list[TextResult | TaskExecutionError]:
        """Run several tasks; an engine that batches overrides this. Each task fails on its own."""
        results: list[TextResult | TaskExecutionError] = []
        for args in tasks:
            try:
                results.append(self.run(args))
            except TaskExecutionError as exc:
                results.append(exc)
        return results

    @abstractmethod
    def runtime_tag(self) -> str:
        """The card model key's ``runtime``: the software that determines GPT numerics."""


class ImageEngine(ABC):
    """Runs SD tasks."""

    name: str

    @abstractmethod
    def run(self, args: SDTaskArgs) -> ImageResult:
        """Run one task: ``task_config.num_images`` PNG images from one seeded generator."""
