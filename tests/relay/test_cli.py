"""``python -m network.relay`` as an operator starts it: from a deployment file, serving until SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.chain.anvil import free_port
from network.relay.__main__ import parse_config
from network.relay.store import RelayStore
from tests.serving import first_answer

REPO = Path(__file__).resolve().parents[2]


def test_the_deployment_file_gives_the_addresses_and_the_start_block(deployment, tmp_path):
    deployment.save(tmp_path / "deployment.json")
    config = parse_config(["--rpc-url", "http://x", "--deployment", str(tmp_path / "deployment.json")])
    assert config.task_address == deployment.address("Task")
    assert config.node_address == deployment.address("Node")
    assert config.start_block == deployment.block_number


def test_a_file_that_is_not_a_deployment_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "deployment.json").write_text('{"addresses": {"Task": "0x' + "11" * 20 + '"}}')
    with pytest.raises(SystemExit) as exited:
        parse_config(["--rpc-url", "http://x", "--deployment", str(tmp_path / "deployment.json")])
    assert exited.value.code == 2
    assert "deployment.json: cannot be read: unsupported deployment format" in capsys.readouterr().err


def test_a_plain_postgresql_url_opens_with_the_installed_driver(postgres_database, tmp_path):
    plain = postgres_database.replace("postgresql+psycopg://", "postgresql://")
    config = parse_config(
        ["--rpc-url", "http://x", "--task-address", "0x" + "11" * 20, "--database-url", plain]
    )
    store = RelayStore(config.db_url)  # SQLAlchemy alone would look for psycopg2, not installed
    try:
        assert store.is_postgres and store.get_cursor("task-events") is None
    finally:
        store.close()


def test_the_relay_process_serves_and_stops_on_sigterm(anvil, deployment, tmp_path):
    deployment.save(tmp_path / "deployment.json")
    port = free_port()
    command = [
        sys.executable, "-m", "network.relay", "--rpc-url", anvil.rpc_url, "--deployment",
        str(tmp_path / "deployment.json"), "--data-dir", str(tmp_path / "data"), "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
    try:
        answer = first_answer(f"http://127.0.0.1:{port}/v1/network", process, what="relay", timeout_s=30)
        assert answer.status_code == 200 and answer.json()["data"]["tasks"]["total"] == 0
        assert (tmp_path / "data" / "relay.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        stderr = process.stderr.read() if process.stderr else ""
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells what stopped it
        assert code in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr[-2000:]
