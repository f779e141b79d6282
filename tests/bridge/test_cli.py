"""``python -m network.bridge`` as an operator starts it: keys from the environment, the page and the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from cluster.chain.anvil import DEV_MNEMONIC, free_port
from tests.serving import first_answer

REPO = Path(__file__).resolve().parents[2]


def test_the_bridge_process_serves_its_models_and_page_to_a_key(anvil, deployment, tmp_path):
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    wallet = Account.from_mnemonic(DEV_MNEMONIC, account_path="m/44'/60'/0'/0/16")
    deployment.save(tmp_path / "deployment.json")
    (tmp_path / "bridge.json").write_text(
        json.dumps({"models": [{"id": "tiny-chat", "path": "/models/tiny-lm", "task_type": "gpt"}]})
    )
    port = free_port()
    env = {
        **os.environ,
        "HELIUM_BRIDGE_PRIVATE_KEY": wallet.key.hex(),
        "HELIUM_BRIDGE_API_KEYS": "sk-cli-test",
    }
    command = [
        sys.executable, "-m", "network.bridge", "--rpc-url", anvil.rpc_url, "--deployment",
        str(tmp_path / "deployment.json"), "--relay-url", "http://127.0.0.1:9", "--port", str(port),
        "--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "bridge.json"),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        page = first_answer(f"{base}/", process, what="bridge", timeout_s=60)
        assert page.status_code == 200 and "<html" in page.text.lower()
        models = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer sk-cli-test"})
        assert [m["id"] for m in models.json()["data"]] == ["tiny-chat"]
        refused = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and "error" in refused.json()
        # one unauthenticated body nested 100,000 deep used to kill the process (a C stack overflow)
        deep = httpx.post(f"{base}/v1/chat/completions", content="[" * 100_000 + "]" * 100_000, timeout=60)
        assert deep.status_code == 400 and "nests" in deep.json()["error"]["message"]
        big = httpx.post(f"{base}/v1/images/generations", content=b"{" + b" " * (1 << 20) + b"}", timeout=60)
        assert big.status_code == 413 and process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_the_bridge_refuses_to_start_without_models_keys_or_a_wallet(tmp_path):
    bare = subprocess.run(
        [sys.executable, "-m", "network.bridge", "--rpc-url", "http://x", "--deployment", "d.json",
         "--relay-url", "http://y"],
        cwd=REPO, env={**os.environ, "HELIUM_BRIDGE_API_KEYS": ""}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert bare.returncode == 2 and "models" in bare.stderr and "api_keys" in bare.stderr

    env = {k: v for k, v in os.environ.items() if k != "HELIUM_BRIDGE_PRIVATE_KEY"}
    env["HELIUM_BRIDGE_API_KEYS"] = "sk-cli-test"
    (tmp_path / "deployment.json").write_text("{}")
    (tmp_path / "bridge.json").write_text(
        json.dumps({"models": [{"id": "m", "path": "/m", "task_type": "gpt"}]})
    )
    done = subprocess.run(
        [sys.executable, "-m", "network.bridge", "--rpc-url", "http://x", "--deployment",
         str(tmp_path / "deployment.json"), "--relay-url", "http://y",
         "--config", str(tmp_path / "bridge.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "HELIUM_BRIDGE_PRIVATE_KEY" in done.stderr
