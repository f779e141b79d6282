"""The relay's receipt for a task's stored arguments: EIP-712 typed data the Task contract checks.

The relay signs, once it has stored (and checked) a task's arguments,

    ArgumentsStored(uint256 taskId, uint256 storedAt)

in the domain ``{name: "Helium Task", version: "1", chainId, verifyingContract: the Task contract}``
(``storedAt``: the relay's clock, Unix seconds) and returns it in its answer to the upload. Whoever
holds it (the application that uploaded) can refute a false "no arguments" report on chain:
``Task.refuteNoArguments(taskId, storedAt, signature)`` slashes the reporters when the relay signer is
the contract's ``relaySigner`` and ``storedAt`` is at most half the arguments wait after the start
(contracts/src/lib/ArgumentsReceipt.sol, docs/protocol-decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from cluster.protocol.signing import recover_digest_signer

DOMAIN_NAME = "Helium Task"
DOMAIN_VERSION = "1"
DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
RECEIPT_TYPEHASH = keccak(b"ArgumentsStored(uint256 taskId,uint256 storedAt)")


@dataclass(frozen=True, slots=True)
class ArgumentsReceipt:
    """What the relay signed for one task: the time it stored the arguments and its signature (hex)."""

    task_id: int
    stored_at_s: int
    signature: str

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "stored_at": self.stored_at_s, "signature": self.signature}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArgumentsReceipt:
        return cls(int(data["task_id"]), int(data["stored_at"]), str(data["signature"]))


def domain_separator(chain_id: int, task_address: str) -> bytes:
    """The EIP-712 domain separator of the receipts of the Task contract at ``task_address``."""
    fields = (DOMAIN_TYPEHASH, keccak(DOMAIN_NAME.encode()), keccak(DOMAIN_VERSION.encode()), chain_id)
    encoded = abi_encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"], [*fields, to_checksum_address(task_address)]
    )
    return keccak(encoded)


def receipt_digest(chain_id: int, task_address: str, task_id: int, stored_at_s: int) -> bytes:
    """The EIP-712 digest the relay signs: keccak256("\\x19\\x01" || domain separator || struct hash)."""
    fields = [RECEIPT_TYPEHASH, task_id, stored_at_s]
    struct_hash = keccak(abi_encode(["bytes32", "uint256", "uint256"], fields))
    return keccak(b"\x19\x01" + domain_separator(chain_id, task_address) + struct_hash)


def sign_receipt(
    private_key: bytes | str, chain_id: int, task_address: str, task_id: int, stored_at_s: int
) -> ArgumentsReceipt:
    digest = receipt_digest(chain_id, task_address, task_id, stored_at_s)
    signed = Account.unsafe_sign_hash(digest, private_key)
    return ArgumentsReceipt(task_id, stored_at_s, "0x" + bytes(signed.signature).hex())


def receipt_signer(chain_id: int, task_address: str, receipt: ArgumentsReceipt) -> str:
    """The checksummed address that signed ``receipt`` (``SignatureInvalid`` when none can be recovered)."""
    digest = receipt_digest(chain_id, task_address, receipt.task_id, receipt.stored_at_s)
    return recover_digest_signer(digest, receipt.signature)
