"""Thousands of nodes joined in seconds, for the scaling test and the gas benchmark.

A join per transaction would take minutes: here every node is an address anvil impersonates (no key,
no signature), funded with ``anvil_setBalance``; mining is paused while the joins queue up in batched
JSON-RPC requests, and a few blocks with a raised gas limit take them all. The block gas limit is then
put back, so that what the test measures afterwards runs under the real limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import requests
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

Card = tuple[str, int, str]
BATCH = 500
JOIN_GAS = 2_000_000
SETUP_BLOCK_GAS_LIMIT = 2_000_000_000
REAL_BLOCK_GAS_LIMIT = 30_000_000


def crowd_addresses(count: int, salt: str = "crowd") -> list[str]:
    """Deterministic addresses nobody holds a key for (anvil impersonates them)."""
    return [to_checksum_address(keccak(f"{salt}:{i}".encode())[12:]) for i in range(count)]


def own_card_models(count: int, salt: str = "card") -> list[Card]:
    """A card model per node, VRAM spread over 8..4,000 GB by the golden ratio: every node its own group,
    and even a few nodes land far apart in the VRAM tree, as a large network's do."""
    golden = 0.6180339887
    return [(f"{salt} GPU {i}", 8 + int((i * golden) % 1 * 3992), "crowd-runtime") for i in range(count)]


class Rpc:
    """Raw JSON-RPC with batches (web3.py sends one request per call)."""

    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()
        self._id = 0

    def call(self, method: str, params: list[Any]) -> Any:
        return self.batch([(method, params)])[0]

    def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        body = []
        for method, params in calls:
            self._id += 1
            body.append({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        replies = self.session.post(self.url, json=body, timeout=300).json()
        replies.sort(key=lambda r: r["id"])
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(calls)} calls failed, first: {errors[0]}")
        return [r["result"] for r in replies]


@contextmanager
def impersonating(rpc_url: str) -> Iterator[Rpc]:
    """Any address may send unsigned transactions inside the block (anvil only); off again after."""
    rpc = Rpc(rpc_url)
    rpc.call("anvil_autoImpersonateAccount", [True])
    try:
        yield rpc
    finally:
        rpc.call("anvil_autoImpersonateAccount", [False])


def join_crowd(rpc_url: str, node_contract: Any, cards: Sequence[Card], salt: str = "crowd") -> list[str]:
    """Joins ``len(cards)`` new nodes (node i with cards[i]); returns their addresses, in order.

    Every join must succeed: a failed receipt raises.
    """
    with impersonating(rpc_url) as rpc:
        return _join(rpc, node_contract, cards, crowd_addresses(len(cards), salt))


def _join(rpc: Rpc, node_contract: Any, cards: Sequence[Card], addresses: list[str]) -> list[str]:
    stake = node_contract.functions.nodeStake().call()
    funding = hex(stake + 10**18)
    rpc.call("evm_setAutomine", [False])
    rpc.call("anvil_setBlockGasLimit", [hex(SETUP_BLOCK_GAS_LIMIT)])
    try:
        hashes: list[str] = []
        for start in range(0, len(cards), BATCH):
            chunk = list(zip(addresses[start : start + BATCH], cards[start : start + BATCH], strict=True))
            rpc.batch([("anvil_setBalance", [a, funding]) for a, _ in chunk])
            sends = []
            for address, card in chunk:
                tx = {
                    "from": address,
                    "to": node_contract.address,
                    "value": hex(stake),
                    "gas": hex(JOIN_GAS),
                    "data": node_contract.encode_abi("join", args=list(card)),
                }
                sends.append(("eth_sendTransaction", [tx]))
            hashes += rpc.batch(sends)
            rpc.call("evm_mine", [])
        while int(rpc.call("txpool_status", [])["pending"], 16):
            rpc.call("evm_mine", [])
        for start in range(0, len(hashes), BATCH):
            receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes[start : start + BATCH]])
            failed = [r["transactionHash"] for r in receipts if r is None or int(r["status"], 16) != 1]
            if failed:
                raise RuntimeError(f"{len(failed)} joins failed, first: {failed[0]}")
    finally:
        rpc.call("anvil_setBlockGasLimit", [hex(REAL_BLOCK_GAS_LIMIT)])
        rpc.call("evm_setAutomine", [True])
        rpc.call("evm_mine", [])  # the limit applies from the next block on
    return addresses
