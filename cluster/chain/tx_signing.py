"""EIP-1559 transactions signed with rlp and libsecp256k1 (coincurve) directly.

The same bytes as eth_account's ``sign_transaction`` (RFC 6979 signatures are deterministic, and
libsecp256k1 gives the low-s form that eth-keys does), at about a fifth of its cost: eth_account builds
a typed transaction through validators, binds a signature object by introspection and checksums the
signer's address on every call (0.8 ms a transaction, of which the signature itself is 0.06 ms:
benchmarks/results/cluster_overhead.md, "Where a round's CPU goes"). Anything else (a legacy gas price,
an access list, coincurve missing) goes to eth_account.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import rlp
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

try:
    from coincurve import PrivateKey
except ImportError:  # pragma: no cover - coincurve is a dependency; eth_account signs without it
    PrivateKey = None

EIP1559_FIELDS = frozenset(
    {"to", "data", "value", "gas", "nonce", "chainId", "maxFeePerGas", "maxPriorityFeePerGas"}
)


@functools.lru_cache(maxsize=1 << 14)
def _private_key(secret: bytes) -> Any:
    return PrivateKey(secret)


def _bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith(("0x", "0X")) else value)
    return bytes(value)


def sign_transaction(account: LocalAccount, fields: Mapping[str, Any]) -> tuple[str, str]:
    """(transaction hash, raw transaction), both 0x-hex, of ``fields`` signed by ``account``."""
    if PrivateKey is None or set(fields) != EIP1559_FIELDS:
        signed = account.sign_transaction(dict(fields))
        return "0x" + bytes(signed.hash).hex(), "0x" + bytes(signed.raw_transaction).hex()
    body = [
        int(fields["chainId"]), int(fields["nonce"]), int(fields["maxPriorityFeePerGas"]),
        int(fields["maxFeePerGas"]), int(fields["gas"]), _bytes(fields["to"]), int(fields["value"]),
        _bytes(fields["data"]), [],
    ]  # fmt: skip
    digest = keccak(b"\x02" + rlp.encode(body))
    signature = _private_key(bytes(account.key)).sign_recoverable(digest, hasher=None)
    r, s, y_parity = (
        int.from_bytes(signature[:32], "big"),
        int.from_bytes(signature[32:64], "big"),
        signature[64],
    )
    raw = b"\x02" + rlp.encode([*body, y_parity, r, s])
    return "0x" + keccak(raw).hex(), "0x" + raw.hex()
