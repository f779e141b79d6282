"""Receipts of many transactions in flight, waited for with one request per block."""

from __future__ import annotations

import asyncio
from collections import Counter

from eth_account import Account
from web3 import Web3

from cluster.chain.receipts import ReceiptWatcher
from cluster.chain.rpc import RpcClient, connect


def send_unmined(w3: Web3, count: int) -> list[str]:
    """``count`` transfers in the pool of a chain that mines only when told."""
    sender, receiver = w3.eth.accounts[5], w3.eth.accounts[6]
    return [
        w3.eth.send_transaction({"from": sender, "to": receiver, "value": i + 1}).to_0x_hex()
        for i in range(count)
    ]


class _AnsweredCounts(RpcClient):
    """Counts the answers as well as the requests: a request counted is not yet a request answered."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_answered: Counter[str] = Counter()

    async def request(self, method: str, params: list) -> object:
        try:
            return await super().request(method, params)
        finally:
            self.num_answered[method] += 1


def wait_all(url: str, hashes: list[str], mine) -> tuple[list[dict | None], RpcClient]:
    async def scenario():
        rpc = _AnsweredCounts(connect(url))
        watcher = ReceiptWatcher(rpc, poll_interval_s=0.02)
        try:
            waits = [asyncio.create_task(watcher.wait([h], timeout_s=30)) for h in hashes]
            # Mine once each waiter's direct check was answered (none mined): mined sooner, a check finds it.
            while rpc.num_answered["eth_getTransactionReceipt"] < len(hashes):
                await asyncio.sleep(0.01)
            await asyncio.to_thread(mine)
            return await asyncio.gather(*waits), rpc
        finally:
            await rpc.w3.provider.disconnect()

    return asyncio.run(scenario())


def test_waiters_get_their_receipts_from_one_request_per_block(w3: Web3, anvil) -> None:
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = send_unmined(w3, 12)
        receipts, rpc = wait_all(anvil.rpc_url, hashes, lambda: w3.provider.make_request("evm_mine", []))
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    assert [r["transactionHash"] for r in receipts] == hashes
    assert rpc.num_calls["eth_getTransactionReceipt"] == 12  # each waiter's one direct check
    assert rpc.num_calls["eth_getBlockReceipts"] <= 2  # the block that held them (and its predecessor)


def test_a_node_without_block_receipts_is_asked_per_transaction(w3: Web3, rpc_proxy) -> None:
    rpc_proxy.unsupported.add("eth_getBlockReceipts")
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = send_unmined(w3, 3)
        receipts, rpc = wait_all(rpc_proxy.url, hashes, lambda: w3.provider.make_request("evm_mine", []))
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    assert [r["transactionHash"] for r in receipts] == hashes
    assert rpc.num_calls["eth_getTransactionReceipt"] > 3  # asked again after the first checks


def test_a_transaction_that_is_never_mined_times_out(w3: Web3, anvil) -> None:
    async def scenario():
        rpc = RpcClient(connect(anvil.rpc_url))
        try:
            return await ReceiptWatcher(rpc, poll_interval_s=0.02).wait(["0x" + "ab" * 32], timeout_s=0.3)
        finally:
            await rpc.w3.provider.disconnect()

    assert asyncio.run(scenario()) is None


class _MinesAtFirstHeadRead:
    """An RPC client that, when the head is first asked for, lets two blocks be mined first: the
    waiter's transaction and one more, as a busy chain does between two requests."""

    def __init__(self, rpc: RpcClient, mine):
        self.rpc = rpc
        self.mine = mine
        self.has_mined = False

    async def call(self, method: str, params: list):
        if method == "eth_blockNumber" and not self.has_mined:
            self.has_mined = True
            await asyncio.to_thread(self.mine)
        return await self.rpc.call(method, params)


def test_a_transaction_mined_between_the_direct_check_and_the_first_head_read_is_not_missed(
    w3: Web3, anvil
) -> None:
    def mine_two() -> None:
        w3.provider.make_request("evm_mine", [])  # the waiter's transaction
        w3.provider.make_request("evm_mine", [])  # and a block after it

    async def scenario():
        rpc = RpcClient(connect(anvil.rpc_url))
        try:
            watcher = ReceiptWatcher(_MinesAtFirstHeadRead(rpc, mine_two), poll_interval_s=0.02)
            return await watcher.wait(hashes, timeout_s=5)
        finally:
            await rpc.w3.provider.disconnect()

    w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = send_unmined(w3, 1)
        receipt = asyncio.run(scenario())
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    assert receipt is not None and receipt["transactionHash"] == hashes[0]


def test_transactions_expected_before_their_broadcast_need_no_receipt_request_of_their_own(
    w3: Web3, anvil
) -> None:
    """The sender's new transactions: mined at once (automine), before the loop's next look, and still
    handed over from the block's receipts."""
    account = Account.create()
    w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    chain_id, fee = w3.eth.chain_id, 2 * w3.eth.gas_price
    signed = [
        account.sign_transaction({
            "to": w3.eth.accounts[6], "value": i + 1, "gas": 21_000, "nonce": i, "chainId": chain_id,
            "maxFeePerGas": fee, "maxPriorityFeePerGas": 1,
        })
        for i in range(5)
    ]  # fmt: skip
    hashes = ["0x" + bytes(s.hash).hex() for s in signed]

    async def scenario():
        rpc = _AnsweredCounts(connect(anvil.rpc_url))
        watcher = ReceiptWatcher(rpc, poll_interval_s=0.05)
        try:
            for tx_hash, tx in zip(hashes, signed, strict=True):
                await watcher.expect(tx_hash)
                await rpc.request("eth_sendRawTransaction", ["0x" + bytes(tx.raw_transaction).hex()])
            watcher.forget(hashes[0])  # (for a broadcast that failed; here: waited for as an old one)
            receipts = await asyncio.gather(*(watcher.wait([h], timeout_s=10) for h in hashes))
            return receipts, rpc, watcher
        finally:
            await rpc.w3.provider.disconnect()

    receipts, rpc, watcher = asyncio.run(scenario())
    assert [r["transactionHash"] for r in receipts] == hashes
    assert rpc.num_calls["eth_getTransactionReceipt"] == 1  # only the forgotten one's direct check
    assert not watcher._waiting and not watcher._expected
