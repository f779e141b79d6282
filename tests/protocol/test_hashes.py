"""Hashes on real bytes, checked against independent computations with eth-hash, eth-abi and hashlib."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from eth_abi import encode
from eth_abi.packed import encode_packed
from eth_hash.auto import keccak
from web3 import Web3

from cluster.protocol.gpt import GPTTaskResponse, ResponseChoice, ResponseMessage, Usage
from cluster.protocol.hashes import (
    card_model_key,
    commitment,
    gpt_response_bytes,
    gpt_result,
    gpu_vram_gb,
    new_nonce,
    task_hash,
)

NODE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def known_response() -> GPTTaskResponse:
    return GPTTaskResponse(
        model="tiny-llama",
        choices=[
            ResponseChoice(
                finish_reason="stop", message=ResponseMessage(content='Héllo "world"\n✓'), index=0
            ),
            ResponseChoice(finish_reason="length", message=ResponseMessage(content="second"), index=1),
        ],
        usage=Usage(prompt_tokens=12, completion_tokens=9, total_tokens=21),
    )


# Written by hand from PROTOCOL.md: keys in spec order, ", " and ": " separators, ASCII escapes.
KNOWN_RESPONSE_JSON = (
    '{"model": "tiny-llama", "choices": ['
    '{"finish_reason": "stop", "message": {"role": "assistant", '
    '"content": "H\\u00e9llo \\"world\\"\\n\\u2713"}, '
    '"index": 0}, '
    '{"finish_reason": "length", "message": {"role": "assistant", "content": "second"}, "index": 1}], '
    '"usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}'
)


def test_gpt_response_bytes_are_the_spec_json():
    data = gpt_response_bytes(known_response())
    assert data == KNOWN_RESPONSE_JSON.encode("ascii")
    assert not data.endswith(b"\n")
    assert gpt_result(data) == hashlib.sha256(KNOWN_RESPONSE_JSON.encode()).digest()
    assert len(gpt_result(data)) == 32


def test_gpt_response_bytes_equal_across_processes():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from tests.protocol.test_hashes import known_response; "
        "from cluster.protocol.hashes import gpt_response_bytes, gpt_result; "
        "r = gpt_response_bytes(known_response()); print(r.hex(), gpt_result(r).hex())"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outputs = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code, root], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        outputs.add(out.stdout.strip())
    data = gpt_response_bytes(known_response())
    assert outputs == {f"{data.hex()} {gpt_result(data).hex()}"}


def test_response_round_trips_through_its_bytes():
    data = gpt_response_bytes(known_response())
    assert GPTTaskResponse.model_validate_json(data) == known_response()
    assert list(json.loads(data)) == ["model", "choices", "usage"]


def test_task_hash_is_keccak_of_the_exact_utf8_bytes():
    args = '{"model": "m", "messages": [{"role": "user", "content": "naïve"}]}'
    assert task_hash(args) == keccak(args.encode("utf-8"))
    assert task_hash(args.encode("utf-8")) == task_hash(args)
    # Not a canonical form: any change of whitespace is a different task.
    assert task_hash(args.replace(": ", ":")) != task_hash(args)
    assert task_hash("").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@pytest.mark.parametrize("result", [b"", b"\x01" * 32, bytes(range(24))])
def test_commitment_matches_abi_encode_packed(result: bytes):
    nonce = new_nonce()
    expected = keccak(encode_packed(["bytes", "bytes32", "address"], [result, nonce, NODE]))
    assert commitment(result, nonce, NODE) == expected
    assert commitment(result, nonce, NODE) == bytes(
        Web3.solidity_keccak(["bytes", "bytes32", "address"], [result, nonce, NODE])
    )


def test_commitment_binds_node_nonce_and_result():
    result, nonce = b"\xaa" * 32, b"\x07" * 32
    base = commitment(result, nonce, NODE)
    assert commitment(result, nonce, "0x" + "11" * 20) != base
    assert commitment(result, b"\x08" * 32, NODE) != base
    assert commitment(b"\xab" + result[1:], nonce, NODE) != base
    # lowercase and checksummed addresses are the same node
    assert commitment(result, nonce, NODE.lower()) == base


def test_commitment_refuses_a_short_nonce():
    with pytest.raises(ValueError, match="32 bytes"):
        commitment(b"x", b"\x00" * 31, NODE)


def test_new_nonces_are_random_32_bytes():
    nonces = {new_nonce() for _ in range(64)}
    assert len(nonces) == 64 and all(len(n) == 32 for n in nonces)


def test_card_model_key_matches_abi_encode():
    expected = keccak(encode(["string", "uint256", "string"], ["NVIDIA H100 80GB HBM3", 80, "vllm-0.11.0"]))
    assert card_model_key("NVIDIA H100 80GB HBM3", 80, "vllm-0.11.0") == expected
    # each part of the key matters: PCIe vs SXM, memory size, numerics software
    assert card_model_key("NVIDIA H100 PCIe", 80, "vllm-0.11.0") != expected
    assert card_model_key("NVIDIA H100 80GB HBM3", 81, "vllm-0.11.0") != expected
    assert card_model_key("NVIDIA H100 80GB HBM3", 80, "transformers-5.0") != expected


@pytest.mark.parametrize(("mib", "gb"), [(1, 1), (1024, 1), (1025, 2), (81559, 80), (24564, 24), (24577, 25)])
def test_gpu_vram_gb_rounds_up(mib: int, gb: int):
    assert gpu_vram_gb(mib) == gb


def test_gpu_vram_gb_refuses_nonsense():
    with pytest.raises(ValueError):
        gpu_vram_gb(0)
