"""Three nodes simulated by the tests, since the real node cluster is not part of these tests: they act
on chain through the contracts harness and talk to the real relay through RelayClient, as nodes do."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Sequence

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from PIL import Image

from cluster.chain.anvil import DEV_MNEMONIC
from cluster.protocol.hashes import task_hash
from cluster.relay import RelayClient
from tests.contracts.net import Net

Account.enable_unaudited_hdwallet_features()
DEV = [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(21)]
NODE_ACCOUNTS = DEV[1:4]

GPT_ARGS = '{"model": "tiny-gpt", "messages": [{"role": "user", "content": "hi"}], "seed": 3}'
GPT_RESPONSE = (
    b'{"model": "tiny-gpt", "choices": [{"finish_reason": "stop", "message": {"role": "assistant", '
    b'"content": "hello"}, "index": 0}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, '
    b'"total_tokens": 2}}'
)
SD_ARGS = '{"base_model": "tiny-sd", "prompt": "a cat", "task_config": {"num_images": 2, "steps": 1}}'


def png(seed: int, size: int = 64) -> bytes:
    """A small image of smooth random blobs (a pHash of noise would be fragile under the 64x64 resize)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def gpt_result(files: Sequence[bytes]) -> bytes:
    return hashlib.sha256(files[0]).digest()


class SimulatedNodes:
    def __init__(self, net: Net, relay_url: str):
        self.net = net
        self.relay_url = relay_url

    def join(self) -> None:
        self.net.join_all([a.address for a in NODE_ACCOUNTS])

    def account(self, address: str) -> LocalAccount:
        return next(a for a in NODE_ACCOUNTS if a.address == address)

    def next_task_id(self) -> int:
        return self.net.view(self.net.task, "nextTaskId")

    def wait_for_task(self, task_id: int, timeout_s: float = 20.0) -> int:
        """Block until task ``task_id`` exists on chain."""
        deadline = time.monotonic() + timeout_s
        while self.next_task_id() <= task_id:
            assert time.monotonic() < deadline, f"task {task_id} was never created"
            time.sleep(0.05)
        return task_id

    def fetch_args(self, task_id: int) -> list[str]:
        """Each selected node downloads the arguments from the relay and checks them against taskHash."""
        expected = self.net.task_hash(task_id)

        async def fetch(address: str) -> str:
            async with self._relay(address) as relay:
                return await relay.get_args(task_id, wait_s=20)

        downloads = [asyncio.run(fetch(node)) for node in self.net.selected(task_id)]
        assert all(task_hash(args) == expected for args in downloads)
        return downloads

    def work(self, task_id: int, results: Sequence[bytes]) -> str | None:
        """Commit and disclose ``results`` (one per round); returns the result node if one was chosen."""
        receipts = self.net.run(task_id, list(results))
        success = [a for r in receipts for a in self.net.event_args(r, "TaskSuccess")]
        return success[0]["resultNode"] if success else None

    def deliver(self, task_id: int, result_node: str, files: Sequence[bytes]) -> None:
        """The result node uploads the files to the relay, then reports the upload on chain (and is paid)."""

        async def upload() -> None:
            async with self._relay(result_node) as relay:
                await relay.upload_results(task_id, list(files), wait_s=20)

        asyncio.run(upload())
        self.net.upload(task_id, self.net.selected(task_id).index(result_node), result_node)

    def serve(self, task_id: int, files: Sequence[bytes], result: bytes) -> str:
        """The whole honest path of one task: fetch, agree on ``result``, deliver ``files``."""
        self.fetch_args(task_id)
        result_node = self.work(task_id, [result] * 3)
        assert result_node is not None
        self.deliver(task_id, result_node, files)
        return result_node

    def _relay(self, address: str) -> RelayClient:
        return RelayClient(self.relay_url, self.account(address), backoff_s=0.05, max_backoff_s=0.2)
