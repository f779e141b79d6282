"""Relay request signing (PROTOCOL.md, Relay API, with the binding in docs/protocol-decisions.md).

digest = keccak256(utf8(json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                        + str(timestamp)))
signature = the 65 bytes r || s || v of the secp256k1 signature of ``digest``, hex-encoded, low s.

``params`` are the request's path parameters and JSON body fields, without ``timestamp`` and
``signature``, bound to the request (``bound_params``): its ``method``, its protocol ``path`` and, for an
upload of files, the sha256 of each file in order (``files``). A signature made for one request is
therefore no good for another (a GET of a task's arguments for a POST of its results, or one set of
files for another). The relay recovers the signer and refuses a timestamp more than ``max_skew_s`` from
its own clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from eth_account import Account
from eth_hash.auto import keccak
from eth_keys import keys
from eth_keys.exceptions import BadSignature, ValidationError
from eth_utils import to_checksum_address

try:
    from coincurve import PrivateKey
except ImportError:  # pragma: no cover - coincurve is a dependency; eth_account signs without it
    PrivateKey = None

MAX_CLOCK_SKEW_S = 60
SIGNATURE_BYTES = 65
# secp256k1's group order: (r, s) and (r, n - s) both verify, so only s <= n/2 is taken (as Ethereum does
# since EIP-2), making each signed request's signature unique.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class SignatureRefusal(StrEnum):
    MALFORMED = "malformed"
    STALE = "stale"
    WRONG_SIGNER = "wrong_signer"


class SignatureInvalid(ValueError):
    """A request signature that the relay refuses; ``reason`` says which check failed."""

    def __init__(self, reason: SignatureRefusal, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def bound_params(
    method: str,
    path: str,
    params: dict[str, Any],
    files: Sequence[bytes] | None = None,
    *,
    files_sha256: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The parameters a request signs: its own, its method, its path as the protocol names it
    (``/v1/inference_tasks/7/results``, whatever prefix a proxy adds) and its files' sha256 in order:
    computed from ``files``, or as declared (``files_sha256``) by a verifier that checks the signature
    before the files arrive, and each file against its hash after."""
    bound = {**params, "method": method.upper(), "path": path}
    if files is not None:
        bound["files"] = file_digests(files)
    elif files_sha256 is not None:
        bound["files"] = list(files_sha256)
    return bound


def file_digests(files: Sequence[bytes]) -> list[str]:
    """The lowercase hex sha256 of each file, in order."""
    return [hashlib.sha256(data).hexdigest() for data in files]


def signing_payload(params: dict[str, Any], timestamp: int) -> bytes:
    """The exact bytes whose keccak256 is signed."""
    if "timestamp" in params or "signature" in params:
        raise ValueError("params must not contain 'timestamp' or 'signature': they travel beside them")
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (canonical + str(int(timestamp))).encode("utf-8")


def signing_digest(params: dict[str, Any], timestamp: int) -> bytes:
    return keccak(signing_payload(params, timestamp))


def sign_request(
    params: dict[str, Any], private_key: bytes | str, timestamp: int | None = None
) -> tuple[int, str]:
    """Sign a request's parameters; returns ``(timestamp, signature_hex)`` to send beside them."""
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    digest = signing_digest(params, timestamp)
    if PrivateKey is None:
        return timestamp, "0x" + bytes(Account.unsafe_sign_hash(digest, private_key).signature).hex()
    # libsecp256k1 directly: eth_account's bytes (r || s || 27 + recovery id, low s), without its overhead
    signature = _secp256k1_key(_key_bytes(private_key)).sign_recoverable(digest, hasher=None)
    return timestamp, "0x" + signature[:64].hex() + f"{signature[64] + 27:02x}"


@functools.lru_cache(maxsize=1 << 14)
def _secp256k1_key(secret: bytes) -> Any:
    return PrivateKey(secret)


def _key_bytes(private_key: bytes | str) -> bytes:
    if isinstance(private_key, str):
        return bytes.fromhex(private_key[2:] if private_key.startswith(("0x", "0X")) else private_key)
    return bytes(private_key)


def _decode_signature(signature: str) -> keys.Signature:
    text = signature[2:] if signature.startswith(("0x", "0X")) else signature
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise SignatureInvalid(SignatureRefusal.MALFORMED, "signature is not hex") from None
    if len(raw) != SIGNATURE_BYTES:
        raise SignatureInvalid(
            SignatureRefusal.MALFORMED, f"signature must be {SIGNATURE_BYTES} bytes, got {len(raw)}"
        )
    if int.from_bytes(raw[32:64], "big") > SECP256K1_N // 2:
        raise SignatureInvalid(
            SignatureRefusal.MALFORMED, "signature has a high s (malleable): send its low-s form"
        )
    v = raw[64]
    if v in (27, 28):  # Ethereum's convention; eth_keys wants the raw recovery id 0 or 1
        v -= 27
    if v not in (0, 1):
        raise SignatureInvalid(SignatureRefusal.MALFORMED, f"signature recovery id v={raw[64]} is invalid")
    try:
        return keys.Signature(raw[:64] + bytes([v]))
    except (BadSignature, ValidationError) as exc:
        raise SignatureInvalid(SignatureRefusal.MALFORMED, f"signature is invalid: {exc}") from None


def recover_signer(params: dict[str, Any], timestamp: int, signature: str) -> str:
    """The checksummed address that signed these parameters at this timestamp."""
    return recover_digest_signer(signing_digest(params, timestamp), signature)


def recover_digest_signer(digest: bytes, signature: str) -> str:
    """The checksummed address that signed the 32-byte ``digest`` (low s only, as every signature here)."""
    sig = _decode_signature(signature)
    try:
        public_key = sig.recover_public_key_from_msg_hash(digest)
    except (BadSignature, ValidationError) as exc:
        raise SignatureInvalid(SignatureRefusal.MALFORMED, f"no signer can be recovered: {exc}") from None
    return public_key.to_checksum_address()


def verify_request(
    params: dict[str, Any],
    timestamp: int,
    signature: str,
    *,
    expected_signers: str | list[str] | None = None,
    now: float | None = None,
    max_skew_s: int = MAX_CLOCK_SKEW_S,
) -> str:
    """Check a signed request and return its signer, or raise SignatureInvalid with the reason.

    ``expected_signers``: the address (or addresses) allowed to make this request; None accepts anyone
    (the caller then decides by the returned address).
    """
    now = time.time() if now is None else now
    skew_s = abs(now - int(timestamp))
    if skew_s > max_skew_s:
        raise SignatureInvalid(
            SignatureRefusal.STALE,
            f"timestamp {int(timestamp)} is {skew_s:.0f}s from the relay's clock (allowed: {max_skew_s}s)",
        )
    signer = recover_signer(params, timestamp, signature)
    if expected_signers is not None:
        allowed = [expected_signers] if isinstance(expected_signers, str) else expected_signers
        if signer not in {to_checksum_address(a) for a in allowed}:
            raise SignatureInvalid(
                SignatureRefusal.WRONG_SIGNER, f"signer {signer} is not allowed to make this request"
            )
    return signer
