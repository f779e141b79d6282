"""Each failure is classified once (cluster.failures): try again, stop, or blame the task; a final one
is named by a code."""

from __future__ import annotations

import errno
import sqlite3

import aiohttp
import httpx
import pytest
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, MethodUnavailable, Web3RPCError

from cluster.chain.revert import ContractRevert
from cluster.chain.rpc import RpcError, TransientRpcError
from cluster.chain.tx_types import TxTimeout
from cluster.coordinator.scheduling.runner import JobDeadlineExceeded
from cluster.failures import (
    ArgumentsMismatch,
    Failure,
    FailureCode,
    classify,
    failure_code,
    is_insufficient_funds,
)
from cluster.protocol.errors import ArgumentsInvalid, ModelInvalid, ModelNotAvailable, OutOfMemory
from cluster.relay import RelayNotReady, RelayRefused
from network.app import WrongChain


@pytest.mark.parametrize(
    "error",
    [
        TransientRpcError("eth_call: ConnectionResetError"),
        RpcError("eth_getLogs", -32000, "header not found"),
        TxTimeout("not mined"),
        RelayNotReady("the relay has not seen the task yet"),
        httpx.ConnectError("refused"),
        aiohttp.ClientConnectionError("reset"),
        TimeoutError(),
        ConnectionRefusedError(),
        Web3RPCError("upstream unavailable"),
        ContractRevert("DeadlineNotPassed", {}, b""),  # the chain has not reached the deadline yet
        ModelNotAvailable("the hub did not answer"),
        OSError(errno.ENOSPC, "No space left on device"),  # the operator frees space; the round waits
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        RpcError("eth_sendRawTransaction", -32003, "Insufficient funds for gas * price + value"),  # topped up
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_moment_s_failures_are_retried(error: BaseException) -> None:
    assert classify(error) is Failure.TRANSIENT


@pytest.mark.parametrize(
    "error",
    [
        RelayRefused(403, "the signer is not allowed"),
        RelayRefused(400, "task_args invalid"),
        ContractRevert("NotSelectedNode", {}, b"", tx_hash="0xab"),  # mined: gas spent, final
        ContractRevert("TaskNotFound", {}, b""),
        ContractLogicError("execution reverted"),
        ArgumentsMismatch("the relay's arguments do not hash to the taskHash"),
        JobDeadlineExceeded("missed", attempts=2, last_error=None),  # a TimeoutError, yet final
        KeyError("a bug"),
        RpcError("eth_sendRawTransaction", -32601, "the method does not exist"),  # asked wrongly
        BadFunctionCallOutput("no contract at this address"),
        MethodUnavailable("eth_getBlockReceipts is not available"),
        WrongChain("the deployment is on chain 1, the RPC on 31337"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_and_bugs_are_final_for_the_round(error: BaseException) -> None:
    assert classify(error) is Failure.FINAL


@pytest.mark.parametrize("error", [ArgumentsInvalid("bad", ("seed",)), ModelInvalid("no such architecture")])
def test_what_the_task_is_to_blame_for_is_its_fault(error: BaseException) -> None:
    assert classify(error) is Failure.TASK_FAULT


def test_other_os_errors_are_final() -> None:
    assert classify(PermissionError(errno.EACCES, "Permission denied")) is Failure.FINAL
    assert classify(OSError(errno.EIO, "Input/output error")) is Failure.FINAL


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (JobDeadlineExceeded("missed", attempts=3, last_error=ModelNotAvailable("offline")),
         FailureCode.MODEL_NOT_AVAILABLE),
        (JobDeadlineExceeded("missed", attempts=3, last_error=OutOfMemory("oom")), FailureCode.ENGINE_FAILED),
        (JobDeadlineExceeded("missed", attempts=0, last_error=None), FailureCode.JOB_DEADLINE),
        (ArgumentsMismatch("not the task's"), FailureCode.ARGUMENTS_MISMATCH),
        (ContractRevert("NotSelectedNode", {}, b""), FailureCode.CONTRACT_REVERT),
        (RelayRefused(403, "no"), FailureCode.RELAY_REFUSED),
        (ArgumentsInvalid("bad"), FailureCode.TASK_FAULT),
        (KeyError("a bug"), FailureCode.INTERNAL),
        (RpcError("eth_sendRawTransaction", -32000, "insufficient funds for gas * price + value: balance 0"),
         FailureCode.INSUFFICIENT_FUNDS),
    ],
    ids=lambda value: value.value if isinstance(value, FailureCode) else type(value).__name__,
)  # fmt: skip
def test_a_final_failure_is_named_by_its_code(error: BaseException, code: FailureCode) -> None:
    assert failure_code(error) is code


@pytest.mark.parametrize(
    "message", ["Insufficient funds for gas * price + value", "insufficient funds for gas * price + value"]
)
def test_a_send_refused_for_lack_of_funds_is_recognised(message: str) -> None:
    # anvil's words and geth's: the round waits for a top-up (an alert), and is never silently dropped
    error = RpcError("eth_sendRawTransaction", -32003, message)
    assert is_insufficient_funds(error) and classify(error) is Failure.TRANSIENT
    assert failure_code(error) is FailureCode.INSUFFICIENT_FUNDS
    assert not is_insufficient_funds(RpcError("eth_sendRawTransaction", -32000, "nonce too low"))


def test_a_full_sqlite_database_is_a_full_disk_and_other_sqlite_errors_are_final(tmp_path) -> None:
    """Small result files are written to the round's database (cluster/coordinator/store.py): a disk that
    fills up there is the operator's to fix, as it is for files."""
    db = sqlite3.connect(tmp_path / "full.db")
    db.execute("CREATE TABLE t (data BLOB)")
    db.execute("PRAGMA max_page_count = 2")  # a database that cannot grow: SQLite's SQLITE_FULL
    with pytest.raises(sqlite3.OperationalError) as full:
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
    assert classify(full.value) is Failure.TRANSIENT
    with pytest.raises(sqlite3.OperationalError) as bug:
        db.execute("SELECT no_such_column FROM t")
    assert classify(bug.value) is Failure.FINAL
    db.close()
