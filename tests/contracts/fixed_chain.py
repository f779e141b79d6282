"""A chain on which the same transactions draw the same nodes, run after run: the gas benchmark
(benchmarks/chain_gas.py, chain_scaling.py, gas_profile.py) and tests/contracts/test_gas.py measure on it.

The selection draws from keccak256(prevrandao, taskHash, counter), and anvil derives a block's prevrandao
from its parent block's hash, hence from the parent's timestamp. Anvil stamps blocks with the wall clock,
so each run drew other nodes, and a task's storage writes (20,000 gas for a slot never written, 2,900 for
a written one, 100 for one already written in the same transaction) fell on other tasks: the benchmark's
median of 5 GPT tasks moved by up to 3.4% from run to run. Here the genesis block has a fixed timestamp,
every block the previous one's plus one second, the base fee is 0 (anvil computes the next block's from
the last block mined, even one that evm_revert dropped: a test's draws would depend on the test before
it), and task hashes and nonces are fixed (``FixedBytes``). The draws still depend on the contracts'
code and storage (a block's hash covers its state root and its receipts): other contracts draw
otherwise on the same chain.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from eth_hash.auto import keccak

from cluster.chain.anvil import Anvil
from tests.contracts.crowd import Rpc

GENESIS_TIMESTAMP = 1_767_225_600  # 2026-01-01 00:00:00 UTC


@contextmanager
def deterministic_anvil(
    num_accounts: int, seed: int = 0, extra_args: tuple[str, ...] = ()
) -> Iterator[Anvil]:
    """An anvil whose genesis timestamp is GENESIS_TIMESTAMP + ``seed`` (another seed: another fixed
    sequence of draws), whose blocks follow one second apart (anvil_setBlockTimestampInterval) and carry
    a base fee of 0 (transactions pay their priority fee only). evm_increaseTime has no effect on it:
    pass a deadline with ``pass_deadline``."""
    args = ("--timestamp", str(GENESIS_TIMESTAMP + seed), "--block-base-fee-per-gas", "0", *extra_args)
    with Anvil(num_accounts=num_accounts, extra_args=args) as anvil:
        Rpc(anvil.rpc_url).call("anvil_setBlockTimestampInterval", [1])
        yield anvil


def pass_deadline(rpc: Rpc, seconds: int) -> None:
    """Mines a block ``seconds`` after the latest (evm_setNextBlockTimestamp: works with or without a
    block interval)."""
    latest = int(rpc.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    rpc.call("evm_setNextBlockTimestamp", [latest + seconds])
    rpc.call("evm_mine", [])


class FixedBytes:
    """32-byte values that stand for random ones (task hashes, nonces) and are the same on every run: the
    n-th call returns keccak256 of its label and n. Random bytes would also vary the calldata's gas (a
    zero byte costs 4, another 16)."""

    def __init__(self) -> None:
        self._count = itertools.count()

    def __call__(self, label: str) -> bytes:
        return keccak(f"{label}:{next(self._count)}".encode())
