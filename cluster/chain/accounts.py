"""The operator's identity: one secret from which the operator account and every node account derive.

Two sources, both read from the environment or a file so that the secret never sits in a config file:

- a BIP-39 mnemonic: accounts are the standard BIP-44 Ethereum path ``m/44'/60'/0'/0/{index}``, so any
  wallet that imports the mnemonic sees the same addresses. The operator is ``operator_index`` (default
  0); node ``i`` is index ``node_offset + i`` (default 1, so node 0 is wallet account #1).
- an encrypted keystore JSON (eth-account's format) holding the operator's private key. A single key has
  no BIP-32 tree, so node keys are derived from it with a domain-separated hash (see ``_hashed_node_key``):
  deterministic, so a restart finds the same nodes, and one-way, so a node key never reveals the operator's.

Secrets are held in private attributes only; ``repr`` shows addresses, never keys or words, and errors
about a malformed mnemonic never echo it.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import ValidationError

ETH_PATH_PREFIX = "m/44'/60'/0'/0"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MNEMONIC_ENV = "HELIUM_OPERATOR_MNEMONIC"
KEYSTORE_PASSWORD_ENV = "HELIUM_KEYSTORE_PASSWORD"


class KeyLoadError(ValueError):
    """The operator's secret could not be loaded: the message says which option or file to fix."""


def _read_secret(env: str | None, path: str | Path | None, what: str) -> str:
    """A secret from a file (preferred: not visible in the process environment) or an env variable."""
    if path is not None:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise KeyLoadError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if env is not None and os.environ.get(env):
        return os.environ[env].strip()
    raise KeyLoadError(f"no {what}: set the {env} environment variable or pass a file path")


def _hashed_node_key(operator_key: bytes, index: int) -> bytes:
    """Node key ``index`` of a keystore operator: keccak256("helium/node-key" ‖ key ‖ index ‖ counter).

    The counter only moves past the (astronomically unlikely) digests that are not valid secp256k1 keys.
    """
    for counter in range(256):
        digest = keccak(b"helium/node-key" + operator_key + index.to_bytes(4, "big") + bytes([counter]))
        if 0 < int.from_bytes(digest, "big") < SECP256K1_N:
            return digest
    raise AssertionError("unreachable: 256 consecutive invalid keys")


class OperatorKeys:
    """The operator account and its node accounts. Build with ``from_mnemonic`` or ``from_keystore``."""

    def __init__(
        self, *, seed: bytes | None, operator_key: bytes, source: str, operator_index: int, node_offset: int
    ) -> None:
        if operator_index < 0 or node_offset < 0:
            raise KeyLoadError(f"{operator_index=} and {node_offset=} must be >= 0")
        self._seed = seed
        self._operator_key = operator_key
        self.source = source
        self.operator_index = operator_index
        self.node_offset = node_offset
        self.operator: LocalAccount = Account.from_key(operator_key)
        # One derivation per index: BIP-32 derivation costs a few ms and nodes are asked for often.
        self.node = cache(self._derive_node)

    @classmethod
    def from_mnemonic(
        cls, mnemonic: str, *, passphrase: str = "", operator_index: int = 0, node_offset: int = 1
    ) -> OperatorKeys:
        words = " ".join(mnemonic.split())
        try:
            seed = seed_from_mnemonic(words, passphrase)
        except ValidationError:
            # NOTE: eth-account's message repeats the words; never let them reach a log.
            raise KeyLoadError(
                f"the operator mnemonic is not a valid BIP-39 phrase ({len(words.split())} words; "
                "check spelling and word count 12/15/18/21/24)"
            ) from None
        key = key_from_seed(seed, f"{ETH_PATH_PREFIX}/{operator_index}")
        return cls(
            seed=seed,
            operator_key=key,
            source="mnemonic",
            operator_index=operator_index,
            node_offset=node_offset,
        )

    @classmethod
    def from_mnemonic_source(
        cls, *, env: str | None = MNEMONIC_ENV, path: str | Path | None = None, **kwargs: int | str
    ) -> OperatorKeys:
        """The mnemonic from ``path`` if given, else from the environment variable ``env``."""
        return cls.from_mnemonic(_read_secret(env, path, "operator mnemonic"), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_keystore(
        cls,
        keystore_path: str | Path,
        *,
        password: str | None = None,
        password_env: str | None = KEYSTORE_PASSWORD_ENV,
        password_path: str | Path | None = None,
        node_offset: int = 0,
    ) -> OperatorKeys:
        """The operator key from an eth-account keystore; the password from the argument, file or env."""
        if password is None:
            password = _read_secret(password_env, password_path, "keystore password")
        try:
            keystore = Path(keystore_path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyLoadError(f"cannot read keystore {keystore_path}: {exc.strerror}") from None
        try:
            key = bytes(Account.decrypt(keystore, password))
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise KeyLoadError(f"wrong password for keystore {keystore_path}") from None
            raise KeyLoadError(f"keystore {keystore_path} is not a valid keystore JSON: {exc}") from None
        return cls(seed=None, operator_key=key, source="keystore", operator_index=0, node_offset=node_offset)

    def node_index(self, i: int) -> int:
        """The derivation index of node ``i``."""
        if i < 0:
            raise ValueError(f"node index {i=} must be >= 0")
        return self.node_offset + i

    def _derive_node(self, i: int) -> LocalAccount:
        index = self.node_index(i)
        if self._seed is None:
            return Account.from_key(_hashed_node_key(self._operator_key, index))
        if index == self.operator_index:
            raise ValueError(
                f"node {i} would be the operator account (index {index}); choose node_offset > operator_index"
            )
        return Account.from_key(key_from_seed(self._seed, f"{ETH_PATH_PREFIX}/{index}"))

    def nodes(self, n: int) -> list[LocalAccount]:
        """Node accounts 0..n-1."""
        return [self.node(i) for i in range(n)]

    def __repr__(self) -> str:
        return (
            f"OperatorKeys(source={self.source}, operator={self.operator.address}, "
            f"operator_index={self.operator_index}, node_offset={self.node_offset})"
        )

    __str__ = __repr__

    def __reduce__(self) -> object:
        # Pickling would copy the secret into Ray's object store or a log; derive keys where they are used.
        raise TypeError("OperatorKeys holds the operator's secret and cannot be pickled")
