"""Relay request signing with real secp256k1 keys from eth-account."""

from __future__ import annotations

import json

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from cluster.protocol.signing import (
    SECP256K1_N,
    SignatureInvalid,
    SignatureRefusal,
    recover_signer,
    sign_request,
    signing_payload,
    verify_request,
)

ALICE = Account.from_key("0x" + "11" * 32)
BOB = Account.from_key("0x" + "22" * 32)
NOW = 1_800_000_000
PARAMS = {"task_id": 42, "task_args": '{"prompt": "a café ☕"}', "extra": [1, {"b": 2, "a": 1}]}


def test_payload_is_sorted_compact_json_then_timestamp():
    expected = json.dumps(PARAMS, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + str(NOW)
    assert signing_payload(PARAMS, NOW) == expected.encode("utf-8")
    assert signing_payload(PARAMS, NOW).startswith(b'{"extra":[1,{"a":1,"b":2}],"task_args":')
    assert "☕".encode() in signing_payload(PARAMS, NOW)  # ensure_ascii=False: raw UTF-8


def test_signature_verifies_and_recovers_the_signer():
    timestamp, signature = sign_request(PARAMS, ALICE.key, NOW)
    assert timestamp == NOW
    assert len(bytes.fromhex(signature[2:])) == 65
    assert (
        verify_request(PARAMS, timestamp, signature, expected_signers=ALICE.address, now=NOW) == ALICE.address
    )
    assert verify_request(
        PARAMS, timestamp, signature, expected_signers=[BOB.address, ALICE.address], now=NOW
    )
    # eth-account's own recovery of the same digest agrees
    digest = keccak(signing_payload(PARAMS, NOW))
    assert Account._recover_hash(digest, signature=signature) == ALICE.address


def test_parameter_order_does_not_matter():
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    reordered = dict(reversed(list(PARAMS.items())))
    assert recover_signer(reordered, NOW, signature) == ALICE.address


@pytest.mark.parametrize(
    "tampered",
    [
        {**PARAMS, "task_id": 43},
        {**PARAMS, "task_args": PARAMS["task_args"] + " "},
        {k: v for k, v in PARAMS.items() if k != "extra"},
        {**PARAMS, "new": 1},
    ],
)
def test_tampered_parameters_are_refused_as_wrong_signer(tampered):
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    with pytest.raises(SignatureInvalid) as err:
        verify_request(tampered, NOW, signature, expected_signers=ALICE.address, now=NOW)
    assert err.value.reason is SignatureRefusal.WRONG_SIGNER


def test_tampered_timestamp_is_refused():
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    with pytest.raises(SignatureInvalid) as err:
        verify_request(PARAMS, NOW + 1, signature, expected_signers=ALICE.address, now=NOW)
    assert err.value.reason is SignatureRefusal.WRONG_SIGNER


def test_wrong_signer_is_refused_with_the_address():
    _, signature = sign_request(PARAMS, BOB.key, NOW)
    with pytest.raises(SignatureInvalid) as err:
        verify_request(PARAMS, NOW, signature, expected_signers=ALICE.address, now=NOW)
    assert err.value.reason is SignatureRefusal.WRONG_SIGNER
    assert BOB.address in err.value.message


@pytest.mark.parametrize("offset_s", [61, -61, 3600, -(10**6)])
def test_stale_timestamps_are_refused(offset_s: int):
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    with pytest.raises(SignatureInvalid) as err:
        verify_request(PARAMS, NOW, signature, expected_signers=ALICE.address, now=NOW + offset_s)
    assert err.value.reason is SignatureRefusal.STALE
    assert "60s" in err.value.message


@pytest.mark.parametrize("offset_s", [60, -60, 0])
def test_timestamps_within_the_window_pass(offset_s: int):
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    assert verify_request(PARAMS, NOW, signature, now=NOW + offset_s) == ALICE.address


def _with_v(signature: str, v: int) -> str:
    raw = bytearray(bytes.fromhex(signature[2:]))
    raw[64] = v
    return "0x" + raw.hex()


def test_recovery_id_zero_or_one_is_accepted_like_27_or_28():
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    v = bytes.fromhex(signature[2:])[64]
    assert v in (27, 28)
    assert recover_signer(PARAMS, NOW, _with_v(signature, v - 27)) == ALICE.address


@pytest.mark.parametrize(
    "bad",
    ["", "0x", "zz" * 65, "0x" + "00" * 64, "0x" + "00" * 66, "0x" + "00" * 65, None],
)
def test_malformed_signatures_are_refused(bad):
    good = sign_request(PARAMS, ALICE.key, NOW)[1]
    signature = _with_v(good, 5) if bad is None else bad
    with pytest.raises(SignatureInvalid) as err:
        verify_request(PARAMS, NOW, signature, now=NOW)
    assert err.value.reason is SignatureRefusal.MALFORMED


def test_the_high_s_twin_of_a_signature_is_refused():
    """(r, n - s) with the other recovery id recovers the same signer: accepting it would give one
    request two valid signatures."""
    _, signature = sign_request(PARAMS, ALICE.key, NOW)
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    assert s <= SECP256K1_N // 2  # eth-account signs low-s
    twin = (
        "0x" + (raw[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([27 + ((raw[64] - 27) ^ 1)])).hex()
    )
    digest = keccak(signing_payload(PARAMS, NOW))
    assert Account._recover_hash(digest, signature=bytes.fromhex(twin[2:])) == ALICE.address  # it does verify
    with pytest.raises(SignatureInvalid) as err:
        verify_request(PARAMS, NOW, twin, now=NOW)
    assert err.value.reason is SignatureRefusal.MALFORMED and "high s" in err.value.message


def test_params_must_not_carry_the_signature_fields():
    with pytest.raises(ValueError, match="timestamp"):
        sign_request({**PARAMS, "timestamp": NOW}, ALICE.key, NOW)


@pytest.mark.parametrize("seed", range(50))
def test_a_request_is_signed_to_eth_account_s_bytes(seed: int) -> None:
    """sign_request signs with libsecp256k1 directly: the signature eth_account's unsafe_sign_hash gives
    (r || s || 27 + recovery id, low s), for a key as bytes or as hex."""
    account = Account.from_key(keccak(seed.to_bytes(4, "big")))
    params = {"task_id": seed, "method": "GET", "path": f"/v1/inference_tasks/{seed}"}
    expected = Account.unsafe_sign_hash(keccak(signing_payload(params, NOW + seed)), account.key)
    key = account.key if seed % 2 else "0x" + bytes(account.key).hex()
    assert sign_request(params, key, NOW + seed) == (NOW + seed, "0x" + bytes(expected.signature).hex())
