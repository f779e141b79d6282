"""Start and stop a local anvil chain: used by the tests and by the local network (devnet)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from web3 import HTTPProvider, Web3

from cluster import envs
from cluster.chain.anvil_states import remove_stale_states

REPO_ROOT = Path(__file__).resolve().parents[2]
# anvil's well-known development mnemonic: its accounts are public, never use them on a real chain.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337


def find_anvil_binary() -> str:
    """anvil from $ANVIL_BIN, the contracts' npm tools, or PATH, in that order. Of the npm tools, the
    platform's binary itself: ``.bin/anvil`` is a node script that runs it as a child, so a SIGKILL left
    that child running (and writing state folders) with no parent to stop it."""
    npm_binaries = sorted((REPO_ROOT / "contracts/node_modules/@foundry-rs").glob("anvil-*/bin/anvil"))
    candidates = [
        envs.ANVIL_BIN.get(),
        *(str(path) for path in npm_binaries),
        str(REPO_ROOT / "contracts/node_modules/.bin/anvil"),
    ]
    for path in candidates:
        if path and Path(path).is_file():
            return path
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError(
        "anvil not found: run scripts/setup.sh (installs @foundry-rs/anvil under contracts/) "
        "or set ANVIL_BIN to an anvil binary"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Anvil:
    """A local anvil node on a free loopback port, as a context manager.

    ``num_accounts`` dev accounts derived from ``mnemonic`` each hold ``balance_eth`` of the native
    currency (CNX on our chain). ``block_time_s=None`` mines a block per transaction (automine).
    """

    def __init__(
        self,
        *,
        num_accounts: int = 20,
        balance_eth: int = 1_000_000,
        mnemonic: str = DEV_MNEMONIC,
        chain_id: int = DEV_CHAIN_ID,
        block_time_s: float | None = None,
        port: int | None = None,
        state_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.num_accounts = num_accounts
        self.balance_eth = balance_eth
        self.mnemonic = mnemonic
        self.chain_id = chain_id
        self.block_time_s = block_time_s
        self.port = port or free_port()
        self.state_path = state_path
        self.extra_args = extra_args  # e.g. ("--steps-tracing",) for opcode traces
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def web3(self) -> Web3:
        return Web3(HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))

    def start(self, timeout_s: float = 30.0) -> Anvil:
        cmd = [
            find_anvil_binary(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--accounts", str(self.num_accounts),
            "--balance", str(self.balance_eth),
            "--mnemonic", self.mnemonic,
            "--chain-id", str(self.chain_id),
            "--silent",
            # block states stay in memory (the last 500 blocks', anvil's window), none on disk: a killed
            # anvil would leave them under ~/.foundry/anvil/tmp (anvil_states)
            "--max-persisted-states", "0",
        ]  # fmt: skip
        if self.block_time_s is not None:
            cmd += ["--block-time", str(self.block_time_s)]

        if self.state_path is not None:
            # --state loads the file when it exists and dumps to it on exit: a devnet restart keeps the chain.
            cmd += ["--state", str(self.state_path)]
        cmd += list(self.extra_args)
        remove_stale_states()  # what anvils killed before left on disk
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        w3 = self.web3()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise RuntimeError(f"anvil exited with code {self._proc.returncode}: {err.strip()}")
            try:
                if w3.is_connected():
                    return self
            except Exception:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.rpc_url} within {timeout_s}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()  # SIGTERM lets anvil dump --state
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None
        remove_stale_states()

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
