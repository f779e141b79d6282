"""The operator's keys: BIP-44 derivation equal to eth-account's, keystores, secrets kept out of sight."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from eth_account import Account

from cluster.chain.accounts import KeyLoadError, OperatorKeys
from cluster.chain.anvil import DEV_MNEMONIC

Account.enable_unaudited_hdwallet_features()
# A second, valid phrase so that a test cannot pass only because of anvil's well-known one.
OTHER_MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"
OPERATOR_KEY = "0x" + "5a" * 32


def eth_account_at(mnemonic: str, index: int, passphrase: str = "") -> str:
    return Account.from_mnemonic(
        mnemonic, passphrase=passphrase, account_path=f"m/44'/60'/0'/0/{index}"
    ).address


@pytest.mark.parametrize("mnemonic", [DEV_MNEMONIC, OTHER_MNEMONIC])
@pytest.mark.parametrize(("operator_index", "node_offset"), [(0, 1), (3, 10)])
def test_mnemonic_accounts_equal_eth_account_derivation(mnemonic: str, operator_index: int, node_offset: int):
    keys = OperatorKeys.from_mnemonic(mnemonic, operator_index=operator_index, node_offset=node_offset)
    assert keys.operator.address == eth_account_at(mnemonic, operator_index)
    nodes = keys.nodes(4)
    assert [n.address for n in nodes] == [eth_account_at(mnemonic, node_offset + i) for i in range(4)]
    assert len({n.address for n in nodes} | {keys.operator.address}) == 5
    assert keys.node(2) is nodes[2]  # cached: the same account object on every call


def test_passphrase_changes_every_account():
    plain = OperatorKeys.from_mnemonic(OTHER_MNEMONIC)
    salted = OperatorKeys.from_mnemonic(OTHER_MNEMONIC, passphrase="farm-7")
    assert salted.operator.address == eth_account_at(OTHER_MNEMONIC, 0, "farm-7")
    assert salted.operator.address != plain.operator.address


def test_node_overlapping_operator_is_refused():
    keys = OperatorKeys.from_mnemonic(DEV_MNEMONIC, operator_index=2, node_offset=0)
    assert keys.node(1).address == eth_account_at(DEV_MNEMONIC, 1)
    with pytest.raises(ValueError, match="node_offset"):
        keys.node(2)


def test_malformed_mnemonic_error_never_echoes_the_words():
    bad = DEV_MNEMONIC.replace("junk", "test")  # valid words, wrong checksum
    with pytest.raises(KeyLoadError, match="not a valid BIP-39") as info:
        OperatorKeys.from_mnemonic(bad)
    assert "test test" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_mnemonic_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HELIUM_OPERATOR_MNEMONIC", OTHER_MNEMONIC)
    from_env = OperatorKeys.from_mnemonic_source()
    secret = tmp_path / "mnemonic.txt"
    secret.write_text(f"  {DEV_MNEMONIC}\n")
    from_file = OperatorKeys.from_mnemonic_source(path=secret)
    assert from_env.operator.address == eth_account_at(OTHER_MNEMONIC, 0)
    assert from_file.operator.address == eth_account_at(DEV_MNEMONIC, 0)
    monkeypatch.delenv("HELIUM_OPERATOR_MNEMONIC")
    with pytest.raises(KeyLoadError, match="HELIUM_OPERATOR_MNEMONIC"):
        OperatorKeys.from_mnemonic_source()


def write_keystore(tmp_path: Path, password: str) -> Path:
    # Light scrypt parameters keep the test fast; the format is the same as a production keystore's.
    keystore = Account.encrypt(OPERATOR_KEY, password, kdf="pbkdf2", iterations=1000)
    path = tmp_path / "operator.json"
    path.write_text(json.dumps(keystore))
    return path


def test_keystore_round_trip_and_deterministic_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = write_keystore(tmp_path, "s3cret")
    keys = OperatorKeys.from_keystore(path, password="s3cret")
    assert keys.operator.address == Account.from_key(OPERATOR_KEY).address
    monkeypatch.setenv("HELIUM_KEYSTORE_PASSWORD", "s3cret")
    again = OperatorKeys.from_keystore(path)  # password from the environment
    assert [n.address for n in again.nodes(3)] == [n.address for n in keys.nodes(3)]
    assert len({n.key for n in keys.nodes(3)} | {keys.operator.key}) == 4


def test_keystore_wrong_password_is_refused(tmp_path: Path):
    path = write_keystore(tmp_path, "s3cret")
    with pytest.raises(KeyLoadError, match="wrong password"):
        OperatorKeys.from_keystore(path, password="guess")
    password_file = tmp_path / "pw"
    password_file.write_text("also-wrong\n")
    with pytest.raises(KeyLoadError, match="wrong password"):
        OperatorKeys.from_keystore(path, password_path=password_file)


def test_repr_and_pickle_never_expose_secrets(tmp_path: Path):
    keys = OperatorKeys.from_mnemonic(DEV_MNEMONIC)
    text = repr(keys) + str(keys)
    assert keys.operator.address in text
    assert "test" not in text  # no mnemonic words
    assert keys.operator.key.hex()[2:10] not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(keys)
