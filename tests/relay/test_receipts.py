"""The relay's receipt of stored arguments (cluster/protocol/receipts.py): the time it states is the first
store's, and a relay signs only when it knows which chain its receipts are for. The whole path (upload
answer, application, refutation on chain) runs in tests/app/test_refutation.py."""

from __future__ import annotations

import pytest
from eth_account import Account
from pydantic import ValidationError

from cluster import envs
from cluster.protocol.receipts import receipt_signer, sign_receipt
from cluster.protocol.signing import SignatureInvalid
from network.relay.__main__ import parse_config
from network.relay.config import RelayConfig
from network.relay.store import RelayStore

CREATOR = "0x" + "11" * 20
TASK = "0x" + "33" * 20


@pytest.fixture
def store(tmp_path):
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    yield store
    store.close()


def test_a_repeated_or_racing_upload_keeps_the_first_store_s_time(store):
    store.saw_task(7, 1, CREATOR, b"\x01" * 32)
    assert store.get(7).args_uploaded_at is None
    assert store.mark_args_uploaded(7, at=100.0) == 100.0
    assert store.mark_args_uploaded(7, at=200.0) == 100.0  # the receipt never states a later time
    task = store.get(7)
    assert task.args_uploaded and task.args_uploaded_at == 100.0
    with pytest.raises(KeyError):
        store.mark_args_uploaded(8, at=1.0)


def test_a_receipt_names_its_chain_contract_task_and_time():
    relay = Account.create()
    receipt = sign_receipt(relay.key, 31337, TASK, 7, 1_700_000_000)
    assert receipt_signer(31337, TASK, receipt) == relay.address
    assert receipt_signer(1, TASK, receipt) != relay.address  # another chain
    assert receipt_signer(31337, CREATOR, receipt) != relay.address  # another Task contract
    for task_id, stored_at in ((8, receipt.stored_at_s), (7, receipt.stored_at_s - 1)):
        altered = type(receipt)(task_id, stored_at, receipt.signature)
        assert receipt_signer(31337, TASK, altered) != relay.address
    with pytest.raises(SignatureInvalid):
        receipt_signer(31337, TASK, type(receipt)(7, 1, "0x1234"))


def test_a_receipt_key_needs_the_chain_id(tmp_path):
    key = Account.create().key.hex()
    with pytest.raises(ValidationError, match="chain_id"):
        RelayConfig(rpc_url="http://127.0.0.1:1", task_address=TASK, receipt_key=key)
    config = RelayConfig(rpc_url="http://127.0.0.1:1", task_address=TASK, receipt_key=key, chain_id=31337)
    assert key not in repr(config)  # a secret: never in a log line


def test_the_relay_process_signs_with_the_key_in_its_environment(deployment, tmp_path, monkeypatch):
    deployment.save(tmp_path / "deployment.json")
    key = Account.create().key.hex()
    monkeypatch.setenv(envs.RELAY_RECEIPT_KEY.name, key)
    config = parse_config(["--rpc-url", "http://x", "--deployment", str(tmp_path / "deployment.json")])
    assert config.receipt_key is not None and config.receipt_key.get_secret_value() == key
    assert config.chain_id == deployment.chain_id  # from the deployment file
