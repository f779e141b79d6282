"""What a failed step of a round means, decided once: try again, or stop driving the round.

Transient failures are the moment's (a chain node or the relay unreachable, a transaction not mined yet,
a deadline the chain has not reached yet): the round driver retries the step with backoff. Anything else
is final for the round: a refusal that asking again cannot change (a relay's 4xx, a contract's revert,
arguments that do not hash to the taskHash), a job that missed the deadline, or a bug. A final failure is
logged once with its traceback and recorded on the round; the driver then stops driving it, and the
chain's events (another node's cancel, the task's decision) or the deadline's cancel end it.
"""

from __future__ import annotations

from enum import Enum

import aiohttp
import httpx
from web3.exceptions import ContractLogicError, Web3Exception

from cluster.chain.revert import ContractRevert
from cluster.chain.rpc import RpcError, TransientRpcError
from cluster.chain.tx_types import TxTimeout
from cluster.coordinator.scheduling.runner import JobDeadlineExceeded
from cluster.protocol.errors import ErrorAction, TaskExecutionError
from cluster.relay import RelayNotReady

# Reverts that name a moment, not a refusal: the same call succeeds once the chain moves on (the deadline,
# the end of the arguments wait).
TRANSIENT_REVERTS = frozenset({"DeadlineNotPassed", "ArgumentsWaitNotPassed"})


class Failure(Enum):
    TRANSIENT = "transient"
    FINAL = "final"


class ArgumentsMismatch(Exception):
    """The relay served arguments that do not hash to the task's taskHash: never run them."""


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientRpcError,
    RpcError,  # a node's error answer: load-balanced RPCs answer "header not found" and recover
    TxTimeout,
    RelayNotReady,
    httpx.TransportError,
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
)


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, TaskExecutionError):  # the taxonomy says: RETRY is the moment's, REPORT the task's
        return Failure.TRANSIENT if exc.action is ErrorAction.RETRY else Failure.FINAL
    if isinstance(exc, JobDeadlineExceeded):  # a TimeoutError, but the round's deadline has passed
        return Failure.FINAL
    if isinstance(exc, ContractRevert):
        return Failure.TRANSIENT if exc.name in TRANSIENT_REVERTS else Failure.FINAL
    if isinstance(exc, ContractLogicError):  # a revert of a read through web3
        return Failure.FINAL
    if isinstance(exc, (*_TRANSIENT_TYPES, Web3Exception)):
        return Failure.TRANSIENT
    return Failure.FINAL
