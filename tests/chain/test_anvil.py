"""anvil's block states on disk: the anvils this project starts write none, and what a killed anvil left
is removed, never a folder a running anvil may still use. Each test gives its anvils a home of their own
(HOME), so the folders seen are theirs alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from cluster.chain.anvil import Anvil, find_anvil_binary, free_port
from cluster.chain.anvil_states import remove_stale_states, state_root

BEYOND_MEMORY = 4  # rounds of 300 blocks: anvil keeps 500 blocks' states in memory, older ones went to disk


def _mine_past_memory(w3: Web3) -> None:
    for _ in range(BEYOND_MEMORY):
        w3.provider.make_request("anvil_mine", [hex(300)])
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": w3.eth.accounts[1], "value": 1})


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _answers(w3: Web3) -> bool:
    try:
        return w3.is_connected()
    except Exception:
        return False


def _folders(root: Path) -> list[Path]:
    return sorted(root.glob("anvil-state-*")) if root.is_dir() else []


@pytest.fixture
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))  # anvil writes under $HOME/.foundry; its children inherit
    return state_root(str(tmp_path))


def test_an_anvil_keeps_its_block_states_off_the_disk(own_home: Path):
    """1,200 blocks: an anvil started the old way wrote the states past 500 to its folder here."""
    with Anvil(num_accounts=2) as anvil:
        w3 = anvil.web3()
        _mine_past_memory(w3)
        assert w3.eth.get_balance(w3.eth.accounts[1], w3.eth.block_number - 400) > 0  # recent states served
        assert _folders(own_home) == []
    assert _folders(own_home) == []


def test_what_a_killed_anvil_left_is_removed_and_a_running_anvils_folder_kept(own_home: Path):
    port = free_port()
    # an anvil as any other tool starts it (no --max-persisted-states): it writes state folders
    writer = subprocess.Popen(
        [find_anvil_binary(), "--port", str(port), "--accounts", "2", "--silent"], stdout=subprocess.DEVNULL
    )
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{port}"))
        _until(lambda: _answers(w3), "the anvil answers")
        left_behind = own_home / "anvil-state-01-01-2020-00-00killed"  # as a killed anvil leaves one
        left_behind.mkdir(parents=True)
        (left_behind / "0xabc.json").write_text("{}")
        os.utime(left_behind, (1, 1))  # last written long before any running anvil started
        _mine_past_memory(w3)
        _until(lambda: len(_folders(own_home)) == 2, "the anvil writes its state folder")
        (live,) = [f for f in _folders(own_home) if f != left_behind]

        assert remove_stale_states(own_home) == [left_behind]
        assert _folders(own_home) == [live]  # the running anvil's folder is kept
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert remove_stale_states(own_home) == [live]  # no anvil left that could use it
    assert _folders(own_home) == []
