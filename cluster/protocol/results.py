"""A task's result bytes, the check of result files against them, and the chain's match rule.

The one place that dispatches on the task type (PROTOCOL.md, Hashes): the coordinator's guard, the relay's
upload check, the application's verification and the test faults all go through these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.protocol.hashes import gpt_result
from cluster.protocol.phash import DEFAULT_DISTANCE_THRESHOLD, PHASH_BYTES, sd_result, sd_results_match
from cluster.protocol.task import TaskType


class ResultFilesInvalid(ValueError):
    """Files that do not make, or do not hash to, the result; the message says which and how."""


def task_result(task_type: TaskType | int, files: Sequence[bytes]) -> bytes:
    """The on-chain result of a task's files: sha256 of ``0.json`` (GPT), the images' pHashes (SD)."""
    if TaskType(task_type) is TaskType.GPT:
        if len(files) != 1:
            raise ResultFilesInvalid(f"a GPT task has one result file (0.json), got {len(files)}")
        return gpt_result(files[0])
    try:
        return sd_result(list(files))
    except ValueError as exc:  # no image, or one that does not decode (its index is in the message)
        raise ResultFilesInvalid(str(exc)) from None


def expected_num_files(task_type: TaskType | int, result: bytes) -> int:
    """GPT: one ``0.json``. SD: one image per 8-byte pHash of the result."""
    if TaskType(task_type) is TaskType.GPT:
        return 1
    if not result or len(result) % PHASH_BYTES:
        raise ResultFilesInvalid(f"an SD result of {len(result)} bytes is not a list of 8-byte pHashes")
    return len(result) // PHASH_BYTES


def check_result_files(task_type: TaskType | int, result: bytes, files: Sequence[bytes]) -> None:
    """Raise ``ResultFilesInvalid`` unless ``files`` recompute to exactly ``result``.

    Exact equality, not the SD similarity rule: files come from the node whose disclosure is the result,
    so honest files hash to it bit for bit.
    """
    expected = expected_num_files(task_type, result)
    if len(files) != expected:
        raise ResultFilesInvalid(f"the result covers {expected} file(s), got {len(files)}")
    computed = task_result(task_type, files)
    if computed == result:
        return
    if TaskType(task_type) is TaskType.GPT:
        raise ResultFilesInvalid(f"0.json hashes to {computed.hex()}, not the result {result.hex()}")
    differ = [
        i for i in range(expected) if computed[i * PHASH_BYTES : (i + 1) * PHASH_BYTES]
        != result[i * PHASH_BYTES : (i + 1) * PHASH_BYTES]
    ]  # fmt: skip
    raise ResultFilesInvalid(f"the pHash of image(s) {differ} differs from the result")


def results_match(
    task_type: TaskType | int, a: bytes, b: bytes, distance_threshold: int = DEFAULT_DISTANCE_THRESHOLD
) -> bool:
    """The chain's rule: GPT results are equal bytes; SD results are images within the pHash distance."""
    if TaskType(task_type) is TaskType.GPT:
        return a == b
    return sd_results_match(a, b, distance_threshold)
