"""Checking downloaded result files against the result the three nodes validated on chain.

The relay checks uploads the same way, but the application does not have to trust the relay (or
anything between it and the relay): the chain's result is the only authority.
"""

from __future__ import annotations

import hashlib

from cluster.protocol.phash import PHASH_BYTES, sd_result
from cluster.protocol.task import TaskType
from network.app.errors import ResultMismatch


def expected_file_count(task_id: int, task_type: TaskType, result: bytes) -> int:
    """GPT: one ``0.json``. SD: one PNG per 8-byte pHash of the on-chain result."""
    if task_type is TaskType.GPT:
        return 1
    if not result or len(result) % PHASH_BYTES:
        raise ResultMismatch(task_id, f"on-chain SD result of {len(result)} bytes is not a list of pHashes")
    return len(result) // PHASH_BYTES


def verify_files(task_id: int, task_type: TaskType, result: bytes, files: list[bytes]) -> None:
    """Raise ``ResultMismatch`` unless ``files`` recompute to exactly the on-chain ``result``.

    Exact equality, not the SD similarity rule: the files come from the result node, whose own
    disclosure is the on-chain result, so honest files hash to it bit for bit.
    """
    if len(files) != expected_file_count(task_id, task_type, result):
        raise ResultMismatch(task_id, f"{len(files)} files for a result of {len(result)} bytes")
    if task_type is TaskType.GPT:
        digest = hashlib.sha256(files[0]).digest()
        if digest != result:
            raise ResultMismatch(task_id, f"sha256 of 0.json is {digest.hex()}, the chain has {result.hex()}")
        return
    try:
        hashes = sd_result(files)
    except Exception as exc:  # Pillow raises many types for a file that is no image
        raise ResultMismatch(task_id, f"an image could not be decoded: {type(exc).__name__}: {exc}") from None
    if hashes != result:
        bad = [i for i in range(len(files)) if hashes[8 * i : 8 * i + 8] != result[8 * i : 8 * i + 8]]
        raise ResultMismatch(task_id, f"the pHash of image(s) {bad} differs from the chain's result")
