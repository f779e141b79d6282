"""The sender's own EIP-1559 signing gives eth_account's bytes: the same raw transaction and hash."""

from __future__ import annotations

import random

import pytest
from eth_account import Account

from cluster.chain.tx_signing import sign_transaction

RNG = random.Random(27)
ACCOUNTS = [Account.from_key(RNG.randbytes(32)) for _ in range(4)]


def random_fields(rng: random.Random) -> dict:
    return {
        "to": Account.from_key(rng.randbytes(32)).address,
        "data": "0x" + rng.randbytes(rng.choice([0, 4, 55, 56, 100, 196, 1_000])).hex(),  # rlp's 55-byte edge
        "value": rng.choice([0, 1, 127, 128, 10**18, 2**255]),
        "gas": rng.randint(21_000, 30_000_000),
        "nonce": rng.choice([0, 1, 127, 128, 255, 256, 2**32]),
        "chainId": rng.choice([1, 31337, 8453, 2**40]),
        "maxFeePerGas": rng.randint(0, 10**13),
        "maxPriorityFeePerGas": rng.randint(0, 10**10),
    }


@pytest.mark.parametrize("seed", range(200))
def test_an_eip1559_transaction_is_signed_to_eth_account_s_bytes(seed: int) -> None:
    rng = random.Random(seed)
    account, fields = rng.choice(ACCOUNTS), random_fields(rng)
    expected = account.sign_transaction(fields)
    assert sign_transaction(account, fields) == (
        "0x" + bytes(expected.hash).hex(),
        "0x" + bytes(expected.raw_transaction).hex(),
    )


def test_other_transactions_are_signed_by_eth_account() -> None:
    account = ACCOUNTS[0]
    legacy = {k: v for k, v in random_fields(RNG).items() if not k.startswith("max")} | {"gasPrice": 10**9}
    with_access_list = random_fields(RNG) | {"accessList": [], "type": 2}
    for fields in (legacy, with_access_list):
        expected = account.sign_transaction(fields)
        assert sign_transaction(account, fields)[1] == "0x" + bytes(expected.raw_transaction).hex()
