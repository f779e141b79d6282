"""What a failure means, decided once for the whole product: try again, stop, or blame the task.

- ``TRANSIENT``: the moment's (a chain node or the relay unreachable, a transaction not mined yet, a
  deadline the chain has not reached yet, a full disk the operator will free, an account without the
  funds for its gas, which the operator account tops up). Retried with backoff while
  the work's own deadline allows.
- ``TASK_FAULT``: the task is at fault (arguments that fail validation, a model that cannot run them):
  reported as the task's error, never retried.
- ``FINAL``: asking again cannot change it (a relay's refusal, a contract's revert, arguments that do not
  hash to the taskHash, a missed deadline, or a bug). Whatever it happened to ends once, with its reason.

The coordinator's rounds, the bridge's tasks and the relay's follower all decide through ``classify``;
``failure_code`` names a final failure for the store, the status and the metrics (the message beside it is
for people).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from enum import Enum, StrEnum

import aiohttp
import httpx
import sqlalchemy.exc
from web3.exceptions import (
    BadResponseFormat,
    BlockNumberOutOfRange,
    ContractLogicError,
    MethodUnavailable,
    MultipleFailedRequests,
    PersistentConnectionError,
    ProviderConnectionError,
    StaleBlockchain,
    TimeExhausted,
    TooManyRequests,
    Web3RPCError,
)

from cluster.chain.revert import ContractRevert
from cluster.chain.rpc import RpcError, TransientRpcError
from cluster.chain.tx_types import TxTimeout
from cluster.protocol.errors import ErrorAction, ErrorCode, TaskExecutionError
from cluster.relay import RelayNotReady, RelayRefused

# Reverts that name a moment, not a refusal: the same call succeeds once the chain moves on (the deadline,
# the end of the arguments wait).
TRANSIENT_REVERTS = frozenset({"DeadlineNotPassed", "ArgumentsWaitNotPassed"})
# A disk that is full (or over its quota) is the operator's to fix: the work waits for the space.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How chain nodes refuse a transaction its account cannot pay for (geth: "insufficient funds for gas *
# price + value", anvil: "Insufficient funds for gas * price + value"). The operator's to fix, like a full
# disk: the farm tops the account up (cluster/coordinator/funds) and the step is tried again.
INSUFFICIENT_FUNDS_PHRASES = ("insufficient funds", "insufficient balance")


class Failure(Enum):
    TRANSIENT = "transient"
    TASK_FAULT = "task_fault"
    FINAL = "final"


class FinalError(Exception):
    """Base of the project's own errors that asking again cannot change."""


class ArgumentsMismatch(FinalError):
    """The relay served arguments that do not hash to the task's taskHash: never run them."""


class FailureCode(StrEnum):
    """Why a round stopped being driven, stable for metrics and scripts (the message says more)."""

    ARGUMENTS_MISMATCH = "arguments_mismatch"  # the relay served arguments that are not the task's
    ARGUMENTS_NEVER_CAME = "arguments_never_came"  # reported missing on chain after the arguments wait
    JOB_DEADLINE = "job_deadline"  # no worker answered before the task's deadline
    MODEL_NOT_AVAILABLE = "model_not_available"  # ... because its model could not be fetched
    ENGINE_FAILED = "engine_failed"  # ... because the engine kept failing (memory, a driver, a lost worker)
    CONTRACT_REVERT = "contract_revert"  # the chain refused a transaction of the round
    INSUFFICIENT_FUNDS = "insufficient_funds"  # its node account could not pay the gas (the round waited)
    RELAY_REFUSED = "relay_refused"  # the relay refused a request (4xx)
    TASK_FAULT = "task_fault"  # a task error raised where a report was not possible
    INTERNAL = "internal"  # a bug: the traceback is in the log


# JSON-RPC's own errors: the request itself is wrong, and asking again cannot change that.
FINAL_RPC_CODES = frozenset({-32700, -32600, -32601, -32602})
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientRpcError,
    RpcError,  # a node's error answer: load-balanced RPCs answer "header not found" and recover
    TxTimeout,
    RelayNotReady,
    httpx.TransportError,
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
    sqlalchemy.exc.OperationalError,  # a database that does not answer, or is locked, for the moment
    # web3's of the moment: the node's error answers and the connection; the rest of web3's errors
    # (no contract at an address, an ABI that does not match, a bad argument) are final
    Web3RPCError,
    ProviderConnectionError,
    PersistentConnectionError,
    TimeExhausted,
    TooManyRequests,
    BadResponseFormat,
    MultipleFailedRequests,
    StaleBlockchain,
    BlockNumberOutOfRange,
)


def is_disk_full(exc: BaseException) -> bool:
    """No space left: for a file (ENOSPC, EDQUOT), or for a SQLite database (SQLITE_FULL)."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def is_insufficient_funds(exc: BaseException) -> bool:
    """The chain node refused a transaction because its account cannot pay its gas (and value)."""
    return isinstance(exc, RpcError) and exc.message_has(*INSUFFICIENT_FUNDS_PHRASES)


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, TaskExecutionError):  # the taxonomy says: RETRY is the moment's, REPORT the task's
        return Failure.TRANSIENT if exc.action is ErrorAction.RETRY else Failure.TASK_FAULT
    if isinstance(exc, FinalError):  # before the types below: a missed job deadline is a TimeoutError
        return Failure.FINAL
    if isinstance(exc, ContractRevert):
        return Failure.TRANSIENT if exc.name in TRANSIENT_REVERTS else Failure.FINAL
    if isinstance(exc, (ContractLogicError, MethodUnavailable)):  # a read's revert; a method the node lacks
        return Failure.FINAL
    if isinstance(exc, RpcError) and exc.code in FINAL_RPC_CODES:
        return Failure.FINAL
    if is_disk_full(exc) or isinstance(exc, _TRANSIENT_TYPES):
        return Failure.TRANSIENT
    return Failure.FINAL


def log_retried_failure(log: logging.Logger, what: str, exc: Exception, last: str | None) -> str:
    """A failure of work tried again on its own schedule (a poll, a refresh, a check), logged so that it
    neither floods the log nor hides: the moment's (transient) as a warning each time, anything else (a bug)
    with its traceback once per distinct reason. Returns the reason, for the caller to keep until the work
    succeeds again (and to show as an alert)."""
    reason = f"{type(exc).__name__}: {exc}"
    if classify(exc) is Failure.TRANSIENT:
        log.warning("%s failed, tried again: %s", what, reason)
    elif reason != last:
        log.error("%s failed; tried again each time", what, exc_info=exc)
    return reason


def failure_code(exc: BaseException) -> FailureCode:
    """The code recorded beside a final failure's message."""
    last_error = getattr(exc, "last_error", None)  # a missed job deadline: what the workers last said
    if isinstance(last_error, TaskExecutionError):
        if last_error.code is ErrorCode.MODEL_NOT_AVAILABLE:
            return FailureCode.MODEL_NOT_AVAILABLE
        return FailureCode.ENGINE_FAILED
    if isinstance(exc, TaskExecutionError):
        return FailureCode.TASK_FAULT if exc.is_task_error else FailureCode.ENGINE_FAILED
    if isinstance(exc, ArgumentsMismatch):
        return FailureCode.ARGUMENTS_MISMATCH
    if isinstance(exc, TimeoutError) and isinstance(exc, FinalError):
        return FailureCode.JOB_DEADLINE
    if isinstance(exc, (ContractRevert, ContractLogicError)):
        return FailureCode.CONTRACT_REVERT
    if isinstance(exc, RelayRefused):
        return FailureCode.RELAY_REFUSED
    if is_insufficient_funds(exc):
        return FailureCode.INSUFFICIENT_FUNDS
    return FailureCode.INTERNAL
