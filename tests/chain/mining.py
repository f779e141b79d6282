"""A chain with a block time, and reorgs on cue, on the session's anvil.

``BlockMiner`` turns anvil's automine off and mines a block every ``interval_s`` on a thread of its own,
as a real chain produces blocks whether or not anything happens. After each block it calls
``on_block(number)`` before mining the next one, so a test can reorg a block away before anything is
built on top of it: ``reorg(depth)`` replaces the last ``depth`` blocks with empty ones, and the
transactions they held are gone (anvil drops them; a real node would put them back in its pool, which
only makes the case easier).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from web3 import Web3


class BlockMiner:
    def __init__(self, w3: Web3, *, interval_s: float = 0.05, on_block: Callable[[int], None] | None = None):
        self.w3 = w3
        self.interval_s = interval_s
        self.on_block = on_block
        self.num_reorged_blocks = 0
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()  # held while a block is mined and its hook runs
        self._thread = threading.Thread(target=self._mine_forever, name="block-miner", daemon=True)

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        response = self.w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
        assert "error" not in response, response
        return response["result"]

    def __enter__(self) -> BlockMiner:
        self.rpc("evm_setAutomine", [False])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.rpc("evm_setAutomine", [True])
        self.rpc("evm_mine")  # what is still pending goes into a block, as automine would have done

    def pause(self) -> None:
        """Stop mining; returns once no block is being mined."""
        self._running.clear()
        with self._lock:
            pass

    def resume(self) -> None:
        self._running.set()

    def mine(self) -> int:
        """Mine one block now (also while paused); returns its number."""
        with self._lock:
            self.rpc("evm_mine")
            return self.w3.eth.block_number

    def reorg(self, depth: int) -> None:
        """Replace the last ``depth`` blocks with empty ones: their transactions are dropped."""
        self.rpc("anvil_reorg", [depth, []])
        self.num_reorged_blocks += depth

    def senders_in(self, number: int) -> set[str]:
        block = self.w3.eth.get_block(number, full_transactions=True)
        return {tx["from"] for tx in block["transactions"]}

    def _mine_forever(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._running.is_set():
                continue
            with self._lock:
                self.rpc("evm_mine")
                if self.on_block is not None:
                    self.on_block(self.w3.eth.block_number)
