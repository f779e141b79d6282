"""The transaction sender against a real anvil: nonces, decoded reverts, retries, and exactly-once sends."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from cluster.chain.accounts import OperatorKeys
from cluster.chain.anvil import DEV_MNEMONIC
from cluster.chain.revert import ContractRevert
from cluster.chain.rpc import connect
from cluster.chain.sender import SenderConfig, SentTx, TxRequest, TxSender
from cluster.chain.sync_sender import SyncTxSender
from cluster.chain.tx_journal import JournalEntry, TxJournal
from tests.chain.rpc_proxy import FaultyRpcProxy

KEYS = OperatorKeys.from_mnemonic(DEV_MNEMONIC)  # node i is anvil's funded dev account i + 1
FAST = {"poll_interval_s": 0.02, "receipt_timeout_s": 10.0}


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the sender can catch it."""


@asynccontextmanager
async def sender_on(url: str, journal_path: Path, abi: list[Any], **config: Any) -> AsyncIterator[TxSender]:
    sender = TxSender(connect(url), TxJournal(journal_path), [abi], SenderConfig(**(FAST | config)))
    try:
        yield sender
    finally:
        sender.journal.close()
        await sender.rpc.w3.provider.disconnect()


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


def bump(probe: Contract, tag: int, note: str = "n") -> TxRequest:
    return TxRequest.call(probe, "bump", tag, note)


def nonce_of(w3: Web3, account: LocalAccount) -> int:
    return w3.eth.get_transaction_count(account.address, "pending")


def test_concurrent_sends_from_one_account_take_consecutive_nonces(w3: Web3, anvil, probe, tmp_path):
    account, start = KEYS.node(0), nonce_of(w3, KEYS.node(0))

    async def scenario() -> list[SentTx]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            sends = [sender.send(account, bump(probe, i), key=f"bump:{i}") for i in range(8)]
            return await asyncio.gather(*sends)

    sent = run(scenario)
    assert sorted(s.nonce for s in sent) == list(range(start, start + 8))
    assert all(w3.eth.get_transaction_receipt(s.tx_hash)["status"] == 1 for s in sent)
    assert probe.functions.count().call() == 8
    assert [probe.functions.bumpsByTag(i).call() for i in range(8)] == [1] * 8


def test_nonce_used_behind_the_senders_back_is_recovered(w3: Web3, anvil, probe, tmp_path):
    account = KEYS.node(1)

    async def scenario() -> tuple[SentTx, SentTx]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            first = await sender.send(account, bump(probe, 1), key="first")
            # Another wallet holding the same key spends the nonce the sender has cached as next.
            rogue = account.sign_transaction(
                {"to": probe.address, "data": bump(probe, 99).data, "nonce": first.nonce + 1, "gas": 100_000,
                 "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9, "chainId": w3.eth.chain_id}
            )  # fmt: skip
            w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(rogue.raw_transaction))
            return first, await sender.send(account, bump(probe, 2), key="second")

    first, second = run(scenario)
    assert second.nonce == first.nonce + 2
    assert [probe.functions.bumpsByTag(t).call() for t in (1, 99, 2)] == [1, 1, 1]


def test_custom_error_decoded_from_estimate_without_spending_a_nonce(w3: Web3, anvil, probe, tmp_path):
    account = KEYS.node(2)
    before = nonce_of(w3, account)

    async def scenario() -> ContractRevert:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            with pytest.raises(ContractRevert) as info:
                await sender.send(account, TxRequest.call(probe, "fail", 7, "nope"), key="fail")
            assert sender.journal.get("fail") is None  # never signed
            return info.value

    revert = run(scenario)
    assert (revert.name, revert.error_args) == (
        "Rejected",
        {"code": 7, "who": account.address, "why": "nope"},
    )
    assert not revert.is_mined and nonce_of(w3, account) == before


def test_mined_custom_error_revert_is_decoded_and_never_resent(w3: Web3, anvil, probe, tmp_path):
    account = KEYS.node(3)
    request = TxRequest.call(probe, "fail", 9, "mined", gas=200_000)  # fixed gas: no estimate, so it is mined

    async def scenario() -> tuple[ContractRevert, ContractRevert, JournalEntry]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            with pytest.raises(ContractRevert) as first:
                await sender.send(account, request, key="fail-mined")
            with pytest.raises(ContractRevert) as again:
                await sender.send(account, request, key="fail-mined")  # same key: the stored outcome
            return first.value, again.value, sender.journal.get("fail-mined")

    first, again, entry = run(scenario)
    assert (first.name, first.error_args) == ("Rejected", {"code": 9, "who": account.address, "why": "mined"})
    assert first.is_mined and w3.eth.get_transaction_receipt(first.tx_hash)["status"] == 0
    assert (again.name, again.tx_hash) == ("Rejected", first.tx_hash)
    assert entry.status == "reverted" and nonce_of(w3, account) == entry.nonce + 1  # one tx, not two


def test_builtin_errors_and_payable_calls(w3: Web3, anvil, probe, tmp_path):
    account = KEYS.node(4)

    async def scenario() -> list[ContractRevert]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            reverts = []
            for request in (TxRequest.call(probe, "check", False), TxRequest.call(probe, "divide", 1, 0)):
                with pytest.raises(ContractRevert) as info:
                    await sender.call(request)
                reverts.append(info.value)
            with pytest.raises(ContractRevert) as info:
                await sender.send(account, TxRequest.call(probe, "pay"), key="pay:0")
            reverts.append(info.value)
            await sender.send(account, TxRequest.call(probe, "pay", value_wei=12345), key="pay:1")
            return reverts

    reverts = run(scenario)
    assert [(r.name, r.error_args) for r in reverts] == [
        ("Error", {"message": "Probe: not ok"}),
        ("Panic", {"code": 0x12}),
        ("NoValue", {}),
    ]
    assert w3.eth.get_balance(probe.address) == 12345


class CrashBeforeBroadcast(TxSender):
    async def _broadcast(self, entry: JournalEntry) -> None:
        raise Crash  # journalled, never sent


class CrashAfterBroadcast(TxSender):
    async def _broadcast(self, entry: JournalEntry) -> None:
        await super()._broadcast(entry)
        raise Crash  # the node has it; this process never learns the outcome


@pytest.mark.parametrize("crashing_sender", [CrashBeforeBroadcast, CrashAfterBroadcast])
def test_restart_after_signing_sends_the_state_change_exactly_once(
    w3, anvil, probe, tmp_path, crashing_sender
):
    account, journal_path = KEYS.node(5), tmp_path / "j.db"
    start = nonce_of(w3, account)

    async def scenario() -> tuple[JournalEntry, SentTx, SentTx]:
        crashed = crashing_sender(
            connect(anvil.rpc_url), TxJournal(journal_path), [probe.abi], SenderConfig(**FAST)
        )
        with pytest.raises(Crash):
            await crashed.send(account, bump(probe, 42), key="commit:task=12:round=1")
        await crashed.rpc.w3.provider.disconnect()
        signed = TxJournal(journal_path).get("commit:task=12:round=1")
        async with sender_on(anvil.rpc_url, journal_path, probe.abi) as restarted:
            sent = await restarted.send(account, bump(probe, 42), key="commit:task=12:round=1")
            again = await restarted.send(account, bump(probe, 42), key="commit:task=12:round=1")
        return signed, sent, again

    signed, sent, again = run(scenario)
    assert signed.status == "signed" and sent.tx_hash == signed.tx_hashes[0]  # the same signed bytes
    assert again == sent
    assert probe.functions.bumpsByTag(42).call() == 1
    assert nonce_of(w3, account) == start + 1


def test_restart_re_signs_only_when_another_tx_took_the_nonce(w3: Web3, anvil, probe, tmp_path):
    account, journal_path = KEYS.node(6), tmp_path / "j.db"

    async def scenario() -> tuple[JournalEntry, SentTx]:
        crashed = CrashBeforeBroadcast(connect(anvil.rpc_url), TxJournal(journal_path), [probe.abi])
        with pytest.raises(Crash):
            await crashed.send(account, bump(probe, 7), key="k")
        await crashed.rpc.w3.provider.disconnect()
        signed = TxJournal(journal_path).get("k")
        w3.eth.send_transaction(
            {"from": account.address, "to": account.address, "value": 1}
        )  # takes the nonce
        async with sender_on(anvil.rpc_url, journal_path, probe.abi) as restarted:
            return signed, await restarted.send(account, bump(probe, 7), key="k")

    signed, sent = run(scenario)
    assert sent.nonce == signed.nonce + 1 and sent.tx_hash not in signed.tx_hashes
    assert probe.functions.bumpsByTag(7).call() == 1


def test_a_restarted_sender_never_gives_a_journaled_nonce_to_another_key(w3: Web3, anvil, probe, tmp_path):
    """A process killed between journaling a transaction and broadcasting it: the next process's first new
    transaction of that account takes the next nonce, not the journaled one (the two would meet in the
    pool, "replacement transaction underpriced", or the journaled change be signed again), and the killed
    process's key, sent again, settles with its own signed bytes."""
    account, journal_path = KEYS.node(13), tmp_path / "j.db"

    async def scenario() -> tuple[JournalEntry, SentTx, SentTx]:
        crashed = CrashBeforeBroadcast(connect(anvil.rpc_url), TxJournal(journal_path), [probe.abi])
        with pytest.raises(Crash):
            await crashed.send(account, bump(probe, 21), key="fund:node=1")
        await crashed.rpc.w3.provider.disconnect()
        signed = TxJournal(journal_path).get("fund:node=1")
        async with sender_on(anvil.rpc_url, journal_path, probe.abi) as restarted:
            other = await restarted.send(account, bump(probe, 22), key="fund:node=2")  # a new key first
            again = await restarted.send(account, bump(probe, 21), key="fund:node=1")
        return signed, other, again

    signed, other, again = run(scenario)
    assert other.nonce == signed.nonce + 1
    assert again.nonce == signed.nonce and again.tx_hash == signed.tx_hashes[0]  # the same signed bytes
    assert [probe.functions.bumpsByTag(t).call() for t in (21, 22)] == [1, 1]


def test_key_reused_for_a_different_change_is_refused(w3: Web3, anvil, probe, tmp_path):
    async def scenario() -> None:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            await sender.send(KEYS.node(7), bump(probe, 1), key="k")
            with pytest.raises(ValueError, match="different transaction"):
                await sender.send(KEYS.node(7), bump(probe, 2), key="k")

    run(scenario)
    assert probe.functions.count().call() == 1


def test_transient_rpc_failures_are_retried(w3: Web3, probe, rpc_proxy: FaultyRpcProxy, tmp_path):
    account = KEYS.node(8)

    async def scenario() -> tuple[SentTx, SentTx]:
        async with sender_on(rpc_proxy.url, tmp_path / "j.db", probe.abi) as sender:
            rpc_proxy.fail_next(3)  # the first three requests of the send meet a 503
            first = await sender.send(account, bump(probe, 1), key="a")
            # The broadcast reaches anvil (automine: mined at once) but its answer is lost on the way back.
            rpc_proxy.drop_response_next(1, "eth_sendRawTransaction")
            second = await sender.send(account, bump(probe, 2), key="b")
            return first, second

    first, second = run(scenario)
    assert rpc_proxy.calls["eth_sendRawTransaction"] == 3  # a, b, and b's retry of the same bytes
    assert second.nonce == first.nonce + 1
    assert [probe.functions.bumpsByTag(t).call() for t in (1, 2)] == [1, 1]


def test_unmined_tx_is_fee_bumped_on_the_same_nonce(w3: Web3, anvil, probe, tmp_path):
    account = KEYS.node(9)
    w3.provider.make_request("evm_setAutomine", [False])

    async def scenario() -> tuple[SentTx, JournalEntry]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi, receipt_timeout_s=0.3) as sender:
            task = asyncio.create_task(sender.send(account, bump(probe, 5), key="slow"))
            while (entry := sender.journal.get("slow")) is None or len(entry.tx_hashes) < 2:
                await asyncio.sleep(0.05)
            w3.provider.make_request("evm_mine", [])
            return await task, sender.journal.get("slow")

    try:
        sent, entry = run(scenario)
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    # Bumped at least once; whichever signature of the nonce the block took (the bump may still be on its
    # way to the pool when the block is mined) is the one reported, and the change happened once.
    assert len(set(entry.tx_hashes)) >= 2 and sent.tx_hash == entry.mined_hash in entry.tx_hashes
    assert w3.eth.get_transaction(sent.tx_hash)["nonce"] == entry.nonce == sent.nonce
    assert probe.functions.bumpsByTag(5).call() == 1


def test_nonce_gap_is_resynced_from_the_pending_count(w3: Web3, anvil, probe, tmp_path):
    account = KEYS.node(10)

    async def scenario() -> tuple[SentTx, SentTx, SentTx]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi, receipt_timeout_s=0.3) as sender:
            first = await sender.send(account, bump(probe, 1), key="a")
            # A transaction lost on its way: the sender counts nonce first+1 as used, the chain never saw it.
            state = sender._state(account.address)
            state.next_nonce = first.nonce + 2
            stuck = asyncio.create_task(sender.send(account, bump(probe, 2), key="b"))
            while state.next_nonce is not None:  # until the timed-out send notices the hole below it
                await asyncio.sleep(0.02)
            filler = await sender.send(account, bump(probe, 3), key="c")
            return first, await stuck, filler

    first, stuck, filler = run(scenario)
    assert (filler.nonce, stuck.nonce) == (first.nonce + 1, first.nonce + 2)
    assert [probe.functions.bumpsByTag(t).call() for t in (1, 2, 3)] == [1, 1, 1]


def test_concurrent_sends_of_one_key_share_one_transaction(w3: Web3, anvil, probe, tmp_path):
    async def scenario() -> list[SentTx]:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            return await asyncio.gather(
                *[sender.send(KEYS.node(11), bump(probe, 4), key="same") for _ in range(5)]
            )

    sent = run(scenario)
    assert len({s.tx_hash for s in sent}) == 1
    assert probe.functions.bumpsByTag(4).call() == 1


def test_sync_wrapper_sends_and_raises_like_the_async_sender(w3: Web3, anvil, probe, tmp_path):
    with SyncTxSender(anvil.rpc_url, tmp_path / "j.db", [probe.abi], SenderConfig(**FAST)) as sender:
        sent = sender.send(KEYS.node(12), bump(probe, 6), key="sync")
        assert sender.send(KEYS.node(12), bump(probe, 6), key="sync") == sent
        with pytest.raises(ContractRevert, match="Rejected"):
            sender.call(TxRequest.call(probe, "fail", 1, "sync"))
    assert probe.functions.bumpsByTag(6).call() == 1


def test_an_out_of_gas_revert_is_signed_again_with_more_gas(w3: Web3, anvil, probe, tmp_path):
    """Gas estimated on one state can run out on another: nothing happened, so the change is sent again."""
    account, start = KEYS.node(0), nonce_of(w3, KEYS.node(0))
    starved = TxRequest.call(probe, "bump", 7, "starved", gas=30_000)  # bump needs more than this

    async def scenario() -> SentTx:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            return await sender.send(account, starved, key="bump:starved")

    sent = run(scenario)
    assert probe.functions.bumpsByTag(7).call() == 1  # the change happened exactly once
    # one or more out-of-gas transactions (each retry doubles the gas), then the one that went through
    assert sent.nonce > start and nonce_of(w3, account) == sent.nonce + 1
    assert sent.gas_used > 30_000


def test_an_allowance_for_a_draw_at_mining_is_signed_above_the_estimate(w3: Web3, anvil, probe, tmp_path):
    """A call that draws nodes costs what the mined block's randomness draws, not the estimate's."""
    account = KEYS.node(0)
    request = TxRequest.call(probe, "bump", 8, "drawn", gas_allowance=100_000)
    estimate = w3.eth.estimate_gas({"from": account.address, "to": request.to, "data": request.data})

    async def scenario() -> SentTx:
        async with sender_on(anvil.rpc_url, tmp_path / "j.db", probe.abi) as sender:
            return await sender.send(account, request, key="bump:drawn")

    sent = run(scenario)
    assert w3.eth.get_transaction(sent.tx_hash)["gas"] == math.ceil(estimate * 1.2) + 100_000


def test_a_transaction_reorged_out_before_its_confirmations_is_sent_again_once(
    w3: Web3, anvil, probe, tmp_path
):
    from tests.chain.mining import BlockMiner

    account = KEYS.node(3)
    saw_receipt, reorged = threading.Event(), []

    class WatchedSender(TxSender):  # tells the miner when the sender holds the receipt it will lose
        async def _confirmed(self, entry: JournalEntry, receipt: dict[str, Any]) -> Any:
            saw_receipt.set()
            return await super()._confirmed(entry, receipt)

    def drop_our_block(number: int) -> None:  # on the miner's thread: nothing is mined meanwhile
        if not reorged and account.address in miner.senders_in(number):
            assert saw_receipt.wait(60), "the sender never saw its receipt"
            miner.reorg(1)
            reorged.append(number)

    async def scenario() -> SentTx:
        config = SenderConfig(**FAST, confirmations=3)
        sender = WatchedSender(connect(anvil.rpc_url), TxJournal(tmp_path / "j.db"), [probe.abi], config)
        try:
            return await sender.send(account, bump(probe, 7), key="bump:reorged")
        finally:
            sender.journal.close()
            await sender.rpc.w3.provider.disconnect()

    with BlockMiner(w3, on_block=drop_our_block) as miner:
        sent = run(scenario)
        head = w3.eth.block_number
    journal = TxJournal(tmp_path / "j.db")
    entry = journal.get("bump:reorged")
    journal.close()
    assert reorged, "the transaction was never mined"
    assert probe.functions.bumpsByTag(7).call() == 1  # the state change happened once
    assert entry is not None and entry.tx_hashes == [sent.tx_hash]  # the same signed bytes, sent again
    assert sent.block_number > reorged[0] and head >= sent.block_number + 3  # confirmed where it stayed
    assert w3.eth.get_transaction_receipt(sent.tx_hash)["blockNumber"] == sent.block_number
