"""Revert data decoded into the contracts' own errors, so callers branch on names, never on strings.

A revert's data starts with a 4-byte selector: ``keccak256("Name(type,...)")[:4]``. Solidity's builtin
``Error(string)`` (require/revert with a message) and ``Panic(uint256)`` (assert, overflow, division by
zero) are always known; custom errors come from the ABIs the decoder was given. Unknown selectors and
empty data (out of gas, a bare ``revert()``) still produce a ``ContractRevert``, with ``name=None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import ABIType, BasicType, TupleType, parse
from eth_hash.auto import keccak

from cluster.chain.checksums import checksum_address

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")


def abi_type(param: Mapping[str, Any]) -> str:
    """The canonical ABI type of one parameter, tuples (structs) expanded: "(uint256,address)[]"."""
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param.get("components", [])) + ")" + kind[len("tuple") :]
    return kind


def normalize(type_str: str | ABIType, value: Any) -> Any:
    """A decoded ABI value in a stable plain form: checksum addresses, tuples and arrays as lists."""
    kind = parse(type_str) if isinstance(type_str, str) else type_str
    if kind.is_array:
        return [normalize(kind.item_type, v) for v in value]
    if isinstance(kind, TupleType):
        return [normalize(c, v) for c, v in zip(kind.components, value, strict=True)]
    if isinstance(kind, BasicType) and kind.base == "address":
        return checksum_address(value)
    return value


class ContractRevert(Exception):
    """A call or transaction reverted: ``name``/``error_args`` are the decoded error (``name`` None: unknown).

    (``error_args``, not ``args``: ``BaseException.args`` is the message tuple.)

    ``tx_hash`` is set when the revert was mined (gas was spent); otherwise it came from eth_call or
    eth_estimateGas and nothing reached the chain.
    """

    def __init__(self, name: str | None, args: dict[str, Any], data: bytes, *, tx_hash: str | None = None):
        self.name = name
        self.error_args = args
        self.data = data
        self.tx_hash = tx_hash
        where = f" in tx {tx_hash}" if tx_hash else ""
        shown = f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})" if name else f"0x{data.hex()}"
        super().__init__(f"reverted{where}: {shown}")

    def __reduce__(self) -> tuple[Any, ...]:  # whole across processes (a round driver's send)
        return (_contract_revert, (self.name, self.error_args, self.data, self.tx_hash))

    @property
    def is_mined(self) -> bool:
        return self.tx_hash is not None


class RevertDecoder:
    """Maps revert selectors to error definitions collected from any number of contract ABIs."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]] = ()):
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {
            ERROR_STRING_SELECTOR: ("Error", ["message"], ["string"]),
            PANIC_SELECTOR: ("Panic", ["code"], ["uint256"]),
        }
        for abi in abis:
            for item in abi:
                if item.get("type") == "error":
                    types = [abi_type(p) for p in item.get("inputs", [])]
                    names = [p.get("name") or f"arg{i}" for i, p in enumerate(item.get("inputs", []))]
                    selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
                    self._errors[selector] = (item["name"], names, types)

    def decode(self, data: bytes | str | None, *, tx_hash: str | None = None) -> ContractRevert:
        raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else (data or b"")
        known = self._errors.get(raw[:4]) if len(raw) >= 4 else None
        if known is None:
            return ContractRevert(None, {}, raw, tx_hash=tx_hash)
        name, names, types = known
        try:
            values = decode(types, raw[4:])
        except DecodingError:
            # The selector matched but the body did not: report it raw rather than guess.
            return ContractRevert(None, {}, raw, tx_hash=tx_hash)
        args = {n: normalize(t, v) for n, t, v in zip(names, types, values, strict=True)}
        return ContractRevert(name, args, raw, tx_hash=tx_hash)

    @staticmethod
    def revert_data(error_data: Any) -> str | bytes | None:
        """The revert bytes in a JSON-RPC error's ``data``: hex, or ``{"data": hex}`` on some nodes."""
        if isinstance(error_data, dict):
            error_data = error_data.get("data")
        if isinstance(error_data, str) and error_data.startswith("0x"):
            return error_data
        return None


def _contract_revert(
    name: str | None, args: dict[str, Any], data: bytes, tx_hash: str | None
) -> ContractRevert:
    return ContractRevert(name, args, data, tx_hash=tx_hash)
