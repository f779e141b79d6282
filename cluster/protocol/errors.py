"""The error taxonomy that engines and argument parsing raise.

Every error carries a stable ``code`` and an ``action``. The coordinator decides by ``action`` alone:
``REPORT`` means the task itself is at fault (bad arguments, a model that cannot run them) and the node
calls ``reportTaskError`` on chain; ``RETRY`` means the node or the moment is at fault (memory, a hub
that did not answer, a driver hiccup) and the job is retried, on this or a sibling worker, until the
deadline. Codes never change once released: they are logged, counted in metrics and sent between actors.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorAction(StrEnum):
    REPORT = "report"  # the task is invalid: reportTaskError on chain
    RETRY = "retry"  # transient: retry with backoff until the task's deadline


class ErrorCode(StrEnum):
    ARGUMENTS_INVALID = "arguments_invalid"
    MODEL_INVALID = "model_invalid"
    MODEL_NOT_AVAILABLE = "model_not_available"
    EXECUTION_ERROR = "execution_error"
    OUT_OF_MEMORY = "out_of_memory"


class TaskExecutionError(Exception):
    """Base of every error an engine or the argument parser raises for one task."""

    code: ErrorCode
    action: ErrorAction

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def is_task_error(self) -> bool:
        """True when the node must report the task as invalid on chain instead of retrying."""
        return self.action is ErrorAction.REPORT

    def to_dict(self) -> dict[str, str]:
        """A plain form that crosses actor and process boundaries unchanged."""
        return {"code": self.code.value, "message": self.message}

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.message}"


class ArgumentsInvalid(TaskExecutionError):
    """The task arguments are not valid JSON or break the schema. ``fields`` names each offending field."""

    code = ErrorCode.ARGUMENTS_INVALID
    action = ErrorAction.REPORT

    def __init__(self, message: str, fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.fields = fields


class ModelInvalid(TaskExecutionError):
    """The model exists but cannot run this task (wrong architecture, unsupported dtype or quantization)."""

    code = ErrorCode.MODEL_INVALID
    action = ErrorAction.REPORT


class ModelNotAvailable(TaskExecutionError):
    """The model could not be fetched now (hub unreachable, offline cache miss). Another try may succeed."""

    code = ErrorCode.MODEL_NOT_AVAILABLE
    action = ErrorAction.RETRY


class ExecutionError(TaskExecutionError):
    """Inference failed for a reason that is not the task's fault (driver error, a killed worker)."""

    code = ErrorCode.EXECUTION_ERROR
    action = ErrorAction.RETRY


class OutOfMemory(TaskExecutionError):
    """The device ran out of memory. Retried after freeing cached models, or on a sibling worker."""

    code = ErrorCode.OUT_OF_MEMORY
    action = ErrorAction.RETRY


_BY_CODE: dict[ErrorCode, type[TaskExecutionError]] = {
    cls.code: cls for cls in (ArgumentsInvalid, ModelInvalid, ModelNotAvailable, ExecutionError, OutOfMemory)
}


def error_from_dict(data: dict[str, str]) -> TaskExecutionError:
    """Rebuild an error sent with ``to_dict``; an unknown code becomes an ExecutionError (retry)."""
    try:
        cls = _BY_CODE[ErrorCode(data["code"])]
    except (KeyError, ValueError):
        return ExecutionError(f"unknown error {data!r}")
    return cls(data.get("message", ""))
