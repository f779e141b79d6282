"""The hashes of PROTOCOL.md (Hashes, Nodes): taskHash, GPT result bytes, commitments, card model keys.

These are consensus-critical: three nodes, the relay and the contracts must all compute the same bytes.
Each function documents the exact byte layout it hashes.
"""

from __future__ import annotations

import hashlib
import json
import secrets

from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_canonical_address

from cluster.protocol.gpt import GPTTaskResponse

NONCE_BYTES = 32


def task_hash(task_args: str | bytes) -> bytes:
    """keccak256 of the task-arguments JSON exactly as uploaded (a str is taken as its UTF-8 bytes)."""
    data = task_args.encode("utf-8") if isinstance(task_args, str) else task_args
    return keccak(data)


def gpt_response_bytes(response: GPTTaskResponse) -> bytes:
    """The bytes of ``0.json``: ``json.dumps`` with default separators, ASCII only, no trailing newline.

    The key order is the field order of the response models, which matches PROTOCOL.md.
    """
    return json.dumps(response.model_dump(mode="json")).encode("ascii")


def gpt_result(response_bytes: bytes) -> bytes:
    """The on-chain result of a GPT task: the 32 sha256 digest bytes of ``0.json``."""
    return hashlib.sha256(response_bytes).digest()


def new_nonce() -> bytes:
    """A fresh secret commitment nonce: 32 bytes from the OS's CSPRNG."""
    return secrets.token_bytes(NONCE_BYTES)


def commitment(result: bytes, nonce: bytes, node: str) -> bytes:
    """keccak256(abi.encodePacked(bytes result, bytes32 nonce, address node)).

    encodePacked of ``bytes`` is the raw bytes, of ``bytes32`` the 32 bytes, of ``address`` its 20 bytes.
    """
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return keccak(bytes(result) + bytes(nonce) + to_canonical_address(node))


def gpu_vram_gb(vram_mib: int) -> int:
    """The VRAM a node declares: ceil(MiB / 1024)."""
    if vram_mib <= 0:
        raise ValueError(f"vram_mib must be positive, got {vram_mib}")
    return -(-vram_mib // 1024)


def card_model_key(gpu_name: str, gpu_vram_gb: int, runtime: str) -> bytes:
    """keccak256(abi.encode(string gpuName, uint256 gpuVramGB, string runtime)).

    Only nodes with equal keys share a GPT task: same product, same memory, same numerics software.
    """
    return keccak(abi_encode(["string", "uint256", "string"], [gpu_name, gpu_vram_gb, runtime]))
