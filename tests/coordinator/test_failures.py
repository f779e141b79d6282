"""Each failure of a round's step is classified once: try again, or stop driving the round."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
from web3.exceptions import ContractLogicError, Web3RPCError

from cluster.chain.revert import ContractRevert
from cluster.chain.rpc import RpcError, TransientRpcError
from cluster.chain.tx_types import TxTimeout
from cluster.coordinator.failures import ArgumentsMismatch, Failure, classify
from cluster.coordinator.scheduling.runner import JobDeadlineExceeded
from cluster.protocol.errors import ArgumentsInvalid, ModelNotAvailable
from cluster.relay import RelayNotReady, RelayRefused


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
        ArgumentsInvalid("bad", ("seed",)),
        KeyError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_and_bugs_are_final_for_the_round(error: BaseException) -> None:
    assert classify(error) is Failure.FINAL
