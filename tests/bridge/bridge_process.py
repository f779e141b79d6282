"""``python -m network.bridge`` in a child process, for the tests of what requests do to it: a crash is
observed, not suffered. Its wallet is a fresh, empty account, so nothing it is asked can be paid for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

from cluster.chain.anvil import free_port
from tests.serving import first_answer

REPO = Path(__file__).resolve().parents[2]
PROCESS_KEY = "sk-bridge-process"
MODEL_DIR = "/srv/operator/models/tiny-chat"  # a path only the operator should know


class BridgeProcess:
    def __init__(self, rpc_url: str, deployment: Any, data_dir: Path, **config: Any):
        data_dir.mkdir(parents=True, exist_ok=True)
        deployment.save(data_dir / "deployment.json")
        models = [{"id": "tiny-chat", "path": MODEL_DIR, "task_type": "gpt", "context_tokens": 2048}]
        (data_dir / "bridge.json").write_text(json.dumps({"models": models, **config}))
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = data_dir / "bridge.log"
        self.command = [
            sys.executable, "-m", "network.bridge", "--rpc-url", rpc_url,
            "--deployment", str(data_dir / "deployment.json"), "--relay-url", "http://127.0.0.1:9",
            "--port", str(self.port), "--data-dir", str(data_dir / "data"),
            "--config", str(data_dir / "bridge.json"),
        ]  # fmt: skip
        self.env = {
            **os.environ,
            "HELIUM_BRIDGE_PRIVATE_KEY": Account.create().key.hex(),
            "HELIUM_BRIDGE_API_KEYS": PROCESS_KEY,
        }
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BridgeProcess:
        with self.log_path.open("a") as log:  # a file, not a pipe: nobody reads a pipe, and it fills up
            self.proc = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdout=log, stderr=log, text=True
            )
        first_answer(f"{self.url}/", self.proc, what=f"bridge (log: {self.log_path})", timeout_s=60)
        return self

    def serving(self) -> bool:
        """Alive, and answering an authorized request."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return False
        models = httpx.get(
            f"{self.url}/v1/models", headers={"authorization": f"Bearer {PROCESS_KEY}"}, timeout=30
        )
        return models.status_code == 200

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
