"""The error taxonomy: stable codes and the report-or-retry decision."""

from __future__ import annotations

import pickle

import pytest

from cluster.protocol.errors import (
    ArgumentsInvalid,
    ErrorAction,
    ExecutionError,
    ModelInvalid,
    ModelNotAvailable,
    OutOfMemory,
    TaskExecutionError,
    error_from_dict,
)

# Codes are a wire format (logs, metrics, actor messages): changing one is a breaking change.
EXPECTED = [
    (ArgumentsInvalid, "arguments_invalid", ErrorAction.REPORT),
    (ModelInvalid, "model_invalid", ErrorAction.REPORT),
    (ModelNotAvailable, "model_not_available", ErrorAction.RETRY),
    (ExecutionError, "execution_error", ErrorAction.RETRY),
    (OutOfMemory, "out_of_memory", ErrorAction.RETRY),
]


@pytest.mark.parametrize(("cls", "code", "action"), EXPECTED)
def test_codes_and_actions_are_stable(cls, code, action):
    error = cls("boom")
    assert isinstance(error, TaskExecutionError)
    assert error.code.value == code
    assert error.action is action
    assert error.is_task_error is (action is ErrorAction.REPORT)
    assert str(error) == f"[{code}] boom"


@pytest.mark.parametrize(("cls", "code", "action"), EXPECTED)
def test_errors_cross_process_boundaries(cls, code, action):
    error = cls("out of luck")
    rebuilt = error_from_dict(error.to_dict())
    assert type(rebuilt) is cls and rebuilt.message == "out of luck"
    assert type(pickle.loads(pickle.dumps(error))) is cls


def test_unknown_codes_become_retryable_execution_errors():
    rebuilt = error_from_dict({"code": "from_the_future", "message": "?"})
    assert isinstance(rebuilt, ExecutionError)
    assert rebuilt.action is ErrorAction.RETRY
    assert isinstance(error_from_dict({}), ExecutionError)


def test_arguments_invalid_names_fields():
    error = ArgumentsInvalid("bad", ("messages.0.role", "seed"))
    assert error.fields == ("messages.0.role", "seed")
