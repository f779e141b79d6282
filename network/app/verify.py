"""Checking downloaded result files against the result the three nodes validated on chain.

The relay checks uploads the same way, but the application does not have to trust the relay (or
anything between it and the relay): the chain's result is the only authority.
"""

from __future__ import annotations

from cluster.protocol.results import ResultFilesInvalid, check_result_files, expected_num_files
from cluster.protocol.task import TaskType
from network.app.errors import ResultMismatch


def expected_file_count(task_id: int, task_type: TaskType, result: bytes) -> int:
    """GPT: one ``0.json``. SD: one PNG per 8-byte pHash of the on-chain result."""
    try:
        return expected_num_files(task_type, result)
    except ResultFilesInvalid as exc:
        raise ResultMismatch(task_id, f"on-chain {exc}") from None


def verify_files(task_id: int, task_type: TaskType, result: bytes, files: list[bytes]) -> None:
    """Raise ``ResultMismatch`` unless ``files`` recompute to exactly the on-chain ``result``."""
    try:
        check_result_files(task_type, result, files)
    except ResultFilesInvalid as exc:
        raise ResultMismatch(task_id, str(exc)) from None
