"""Calldata for a few hot contract functions, encoded without web3's per-call ABI lookup.

``TxRequest.call`` finds the function in the ABI, validates the arguments and encodes them on every
call: about a millisecond of CPU, paid by each of the farm's four transactions per round. The selector
and the input types of the functions named here are looked up once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi import encode
from eth_hash.auto import keccak

from cluster.chain.revert import abi_type


class CallEncoder:
    def __init__(self, address: str, abi: Sequence[Mapping[str, Any]], names: Iterable[str]):
        self.address = address
        wanted = set(names)
        self._functions: dict[str, tuple[bytes, list[str]]] = {}
        for item in abi:
            if item.get("type") == "function" and item["name"] in wanted:
                types = [abi_type(p) for p in item["inputs"]]
                selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
                self._functions[item["name"]] = (selector, types)
        missing = wanted - set(self._functions)
        if missing:
            raise ValueError(f"no function {sorted(missing)} in the ABI of {address}")

    def encode(self, name: str, args: Sequence[Any]) -> str:
        """The calldata of ``name(*args)`` as 0x-hex."""
        selector, types = self._functions[name]
        return "0x" + (selector + encode(types, list(args))).hex()
