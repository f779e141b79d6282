"""A relay in a child process (``python -m network.relay``): replicas in tests and benchmarks.

``RunningRelay`` shares its caller's process and GIL; a replica that can be killed with SIGKILL, and a
throughput figure that is the relay's alone, need a process of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from cluster.chain.anvil import free_port


class RelayProcess:
    def __init__(
        self,
        *,
        rpc_url: str,
        task_address: str,
        data_dir: Path,
        node_address: str | None = None,
        database_url: str | None = None,
        start_block: int = 0,
        poll_interval_s: float = 0.1,
        env: Mapping[str, str] | None = None,
        log_name: str = "relay.log",
        code_dir: Path | None = None,
    ):
        self.port = free_port()
        self.data_dir = data_dir
        self.log_path = data_dir / log_name
        self.command = [
            sys.executable, "-m", "network.relay", "--rpc-url", rpc_url, "--task-address", task_address,
            "--data-dir", str(data_dir), "--port", str(self.port), "--start-block", str(start_block),
            "--poll-interval-s", str(poll_interval_s),
        ]  # fmt: skip
        if node_address is not None:
            self.command += ["--node-address", node_address]
        if database_url is not None:
            self.command += ["--database-url", database_url]
        self.env = {**os.environ, **(env or {})}
        self.code_dir = code_dir  # another checkout's relay (``python -m`` imports from its folder)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> RelayProcess:
        """Start it and wait until it answers ``GET /v1/relay``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.code_dir
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the relay exited ({self.proc.returncode}); see {self.log_path}")
            try:
                self.status()
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(
                        f"the relay did not answer in {timeout_s:.0f} s; see {self.log_path}"
                    ) from None
                time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        """This replica's ``GET /v1/relay``: following, next_block, signing_backend."""
        return httpx.get(f"{self.url}/v1/relay", timeout=10).json()["data"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as a crash or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
