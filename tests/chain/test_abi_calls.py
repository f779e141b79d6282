"""Hot calls encoded from a once-looked-up selector give web3's calldata, byte for byte."""

from __future__ import annotations

import pytest
from web3 import Web3

from cluster.chain.abi_calls import CallEncoder
from cluster.chain.artifacts import load_artifact

TASK = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("submitTaskResultCommitment", (12, 2, b"\x07" * 32)),
        ("discloseTaskResult", (12, 0, b"\x01" * 40, b"\x02" * 32)),
        ("reportTaskError", (3, 1)),
        ("reportResultsUploaded", (2**63, 2)),
    ],
)
def test_calldata_equals_web3_s(name: str, args: tuple) -> None:
    abi = load_artifact("Task").abi
    contract = Web3().eth.contract(address=TASK, abi=abi)
    assert CallEncoder(TASK, abi, [name]).encode(name, args) == contract.encode_abi(name, args=list(args))


def test_an_unknown_function_is_named_at_once() -> None:
    with pytest.raises(ValueError, match="discloseEverything"):
        CallEncoder(TASK, load_artifact("Task").abi, ["discloseEverything"])
