"""EIP-55 checksum addresses, remembered: a farm meets the same few thousand addresses (its node accounts,
the contracts, the applications) in every event and receipt, and each checksum is a keccak in pure
Python (about 30 µs; 23 a round at 300 places before this cache: benchmarks/results/cluster_overhead.md)."""

from __future__ import annotations

import functools

from eth_utils import to_checksum_address

# Addresses as given (any case, str or bytes) -> their checksum form; invalid ones raise, and are not kept.
checksum_address = functools.lru_cache(maxsize=1 << 16)(to_checksum_address)
