"""Sends transactions for many accounts: local nonces, EIP-1559 fees, retries, decoded reverts, exactly once.

Every ``send`` names its logical state change with an idempotency key ("commit:task=12:round=1"). The
signed transaction is written to the ``TxJournal`` before it is broadcast, so after a crash a new sender
settles the same key by looking up and rebroadcasting the *same* signed bytes; it signs a new transaction
for a key only when the old one provably can never be mined (the node refused it, or another transaction
took its nonce). A mined revert is final: it is raised as ``ContractRevert`` and never retried.

Nonces: one ``asyncio.Lock`` per account owns its next nonce; concurrent sends from one account take
consecutive nonces and then wait for their receipts in parallel. The nonce is read from the chain's
pending count on first use and again after "nonce too low" or a lost broadcast, once the journal's
unsettled signatures of the account are in the pool (a nonce the journal holds is never given to another
key).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3

from cluster.chain.receipts import ReceiptWatcher
from cluster.chain.revert import RevertDecoder
from cluster.chain.rpc import RpcClient, RpcError, TransientRpcError, hex_int
from cluster.chain.tx_chain import TxChain
from cluster.chain.tx_journal import JournalEntry, Receipt, TxJournal
from cluster.chain.tx_signing import sign_transaction
from cluster.chain.tx_types import SenderConfig, SentTx, TxRequest, TxTimeout

__all__ = ["SenderConfig", "SentTx", "TxRequest", "TxSender", "TxTimeout"]

log = logging.getLogger(__name__)
OUT_OF_GAS_RATIO = 0.97  # a revert that used this much of its gas limit with no reason ran out of gas


class _OutOfGas(Exception):
    def __init__(self, gas_limit: int):
        super().__init__(f"out of gas at {gas_limit}")
        self.gas_limit = gas_limit


KNOWN_TX_PHRASES = ("already known", "already imported", "known transaction")


@dataclass(slots=True)
class _AccountState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_nonce: int | None = None  # None: read the chain's pending count before the next signature


class TxSender:
    """The async sender. One per process and journal; share it between all accounts."""

    def __init__(self, w3: AsyncWeb3, journal: TxJournal, abis: Any = (), config: SenderConfig | None = None):
        self.rpc = RpcClient(w3)
        self.journal = journal
        self.config = config or SenderConfig()
        self.chain = TxChain(self.rpc, RevertDecoder(abis), gas_margin=self.config.gas_margin)
        self.receipts = ReceiptWatcher(self.rpc, poll_interval_s=self.config.poll_interval_s)
        self._accounts: dict[str, _AccountState] = {}
        self._in_flight: dict[str, asyncio.Task[SentTx]] = {}

    async def send(self, account: LocalAccount, request: TxRequest, *, key: str) -> SentTx:
        """Make the state change ``key`` happen exactly once and return its receipt; see the module doc.

        Raises ``ContractRevert`` (estimate or mined revert: never retried), ``TxTimeout`` (call again with
        the same key to keep waiting), ``TransientRpcError`` after the RPC retries, ``ValueError`` when the
        key was used before for a different transaction.
        """
        # Concurrent sends of one key in this process share one attempt instead of racing to sign.
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._send(account, request, key))
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(task)

    async def _send(self, account: LocalAccount, request: TxRequest, key: str) -> SentTx:
        min_gas = 0  # raised after an out-of-gas revert: the next signature gets twice the gas
        for _ in range(self.config.max_nonce_resyncs + self.config.max_gas_retries + 1):
            try:
                entry = self.journal.get(key)
                if entry is not None:
                    _check_same_change(entry, account, request)
                    if entry.status == "mined":
                        return _sent(entry)
                    if entry.status == "reverted":
                        raise await self.chain.replay_revert(
                            entry.account, entry.tx_fields, entry.mined_hash, entry.block_number
                        )
                    if entry.status == "signed":
                        log.info(
                            "[sender] resume key=%s nonce=%d txs=%d", key, entry.nonce, len(entry.tx_hashes)
                        )
                        if (sent := await self._settle(entry, account)) is not None:
                            return sent
                gas = request.gas
                if gas is None:
                    gas = await self.chain.estimate_gas(account.address, request) + request.gas_allowance
                gas = max(gas, request.gas_floor, min_gas)
                entry = await self._sign_and_broadcast(account, request, gas, key)
                if (sent := await self._settle(entry, account, is_broadcast=True)) is not None:
                    return sent
            except _OutOfGas as oog:
                # The state the estimate saw changed before inclusion (e.g. another node's disclosure made
                # ours the one that settles the task). Nothing happened on chain: sign again with more gas.
                min_gas = oog.gas_limit * 2
                log.warning(
                    "[sender] out of gas key=%s gas=%d: retrying with %d", key, oog.gas_limit, min_gas
                )
        raise RuntimeError(
            f"key={key}: no transaction mined after {self.config.max_nonce_resyncs} nonce resyncs and "
            f"{self.config.max_gas_retries} out-of-gas retries"
        )

    async def aclose(self) -> None:
        """Stop the sends in flight (a restart settles them from the journal) and the receipt watch."""
        tasks = [*self._in_flight.values(), *self.receipts.tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def call(self, request: TxRequest, *, sender: str | None = None, block: str = "latest") -> str:
        """eth_call with the same revert decoding as ``send``: the returned data as hex."""
        params = {"to": request.to, "data": request.data, "value": hex(request.value_wei)}
        if sender:
            params["from"] = sender
        return await self.chain.call(params, block)

    # -- signing and broadcasting ------------------------------------------------------------------

    async def _sign_and_broadcast(
        self, account: LocalAccount, request: TxRequest, gas: int, key: str
    ) -> JournalEntry:
        state = self._state(account.address)
        async with state.lock:
            for _ in range(self.config.max_nonce_resyncs + 1):
                if state.next_nonce is None:
                    state.next_nonce = await self._next_nonce(account.address)
                fields = {"to": request.to, "data": request.data, "value": request.value_wei, "gas": gas}
                fields |= {"nonce": state.next_nonce, "chainId": await self.chain.chain_id()}
                fields |= await self.chain.fees()
                entry = self._sign(account, key, fields)
                try:
                    await self._broadcast_new(entry)
                except RpcError as exc:
                    if exc.message_has("nonce too low", "nonce is too low", "already mined"):
                        log.warning(
                            "[sender] resync account=%s nonce=%d reason=%s", account.address, entry.nonce, exc
                        )
                        state.next_nonce = None
                        continue
                    self.journal.record_outcome(key, "failed")  # refused before any mempool: safe to re-sign
                    raise
                except TransientRpcError:
                    state.next_nonce = None  # unknown whether the node took it: ask the chain next time
                    raise
                state.next_nonce = entry.nonce + 1
                log.info("[sender] sent key=%s nonce=%d tx=%s", key, entry.nonce, entry.tx_hashes[-1])
                return entry
        raise RuntimeError(f"key={key}: no usable nonce for {account.address} after resyncs")

    async def _next_nonce(self, address: str) -> int:
        """The chain's pending count, once the signatures an earlier process journaled for the account
        above its mined count are in the pool. One killed between journaling and broadcasting holds a nonce
        the chain does not count: a new transaction given that nonce would meet it when its key is settled
        ("replacement transaction underpriced"), and a gap below it would hold every later one."""
        mined = hex_int(await self.rpc.call("eth_getTransactionCount", [address, "latest"]))
        for entry in self.journal.unfinished(address):
            if entry.nonce >= mined:
                try:
                    await self._broadcast(entry)  # the same bytes: its key, sent again, finds the receipt
                except RpcError as exc:  # replaced or refused: settling its key finds out which
                    log.info("[sender] journaled key=%s nonce=%d not resent: %s", entry.key, entry.nonce, exc)
        return hex_int(await self.rpc.call("eth_getTransactionCount", [address, "pending"]))

    def _sign(self, account: LocalAccount, key: str, fields: dict[str, Any]) -> JournalEntry:
        tx_hash, raw = sign_transaction(account, fields)  # eth_account's bytes, at a fifth of its cost
        # Journal first: if this process dies right after the broadcast, the next one knows these bytes.
        entry = self.journal.record_signed(key, account.address, fields["nonce"], tx_hash, raw, fields)
        log.debug("[sender] signed key=%s nonce=%d tx=%s", key, fields["nonce"], tx_hash)
        return entry

    async def _broadcast(self, entry: JournalEntry) -> None:
        """Send the entry's latest signed bytes. Identical bytes are always safe to resend: retry freely."""

        async def attempt() -> None:
            try:
                await self.rpc.request("eth_sendRawTransaction", [entry.raw_tx])
            except RpcError as exc:
                if exc.message_has(*KNOWN_TX_PHRASES):
                    return  # an earlier attempt whose answer was lost did reach the node
                if exc.message_has("nonce too low") and await self._is_known(entry.tx_hashes[-1]):
                    return  # ... and was already mined
                raise

        await self.rpc.retrying(f"broadcast key={entry.key}", attempt)

    async def _broadcast_new(self, entry: JournalEntry) -> None:
        """The first broadcast of newly signed bytes, their receipt watched for from before it: the loop
        reading whole blocks hands it over, with no receipt request of its own (cluster/chain/receipts.py)."""
        await self.receipts.expect(entry.tx_hashes[-1])
        try:
            await self._broadcast(entry)
        except BaseException:
            self.receipts.forget(entry.tx_hashes[-1])
            raise

    async def _is_known(self, tx_hash: str) -> bool:
        return await self.rpc.call("eth_getTransactionByHash", [tx_hash]) is not None

    # -- waiting, bumping, settling ----------------------------------------------------------------

    async def _settle(
        self, entry: JournalEntry, account: LocalAccount, *, is_broadcast: bool = False
    ) -> SentTx | None:
        """``SentTx``, a raised revert or timeout, or None when another tx took the entry's nonce."""
        num_bumps = 0
        while True:
            receipt = None
            if not is_broadcast:
                receipt, is_dead = await self._lookup(entry)
                if receipt is None and is_dead:
                    log.warning("[sender] dead key=%s nonce=%d: another tx took it", entry.key, entry.nonce)
                    self._state(account.address).next_nonce = None
                    return None
                if receipt is None:
                    await self._broadcast(entry)  # the same bytes: a no-op when the node already has them
            is_broadcast = False
            receipt = receipt or await self._poll_receipt(entry)
            if receipt is not None:
                confirmed = await self._confirmed(entry, receipt)
                if confirmed is not None:
                    return await self._finish(entry, confirmed)
                log.warning("[sender] reorged out key=%s nonce=%d: sending it again", entry.key, entry.nonce)
                continue
            await self._check_gap(entry)
            if num_bumps == self.config.max_fee_bumps:
                raise TxTimeout(f"key={entry.key} nonce={entry.nonce} txs={entry.tx_hashes} not mined")
            entry = await self._bump(entry, account)
            num_bumps += 1

    async def _confirmed(self, entry: JournalEntry, receipt: dict[str, Any]) -> dict[str, Any] | None:
        """The receipt once its block is ``confirmations`` deep and still in the chain; None when a reorg
        dropped the transaction (it is then sent again: the same signed bytes)."""
        while self.config.confirmations > 0:
            head = hex_int(await self.rpc.call("eth_blockNumber", []))
            if head < hex_int(receipt["blockNumber"]) + self.config.confirmations:
                await asyncio.sleep(self.config.poll_interval_s)
                continue
            current = await self._receipt_of(entry)
            if current is None or current["blockHash"] == receipt["blockHash"]:
                return current
            receipt = current  # mined again, in another block: that one must become deep enough
        return receipt

    async def _check_gap(self, entry: JournalEntry) -> None:
        """After a timeout: is a lower nonce of ours missing from the pool (a lost broadcast, an eviction)?"""
        pending = hex_int(await self.rpc.call("eth_getTransactionCount", [entry.account, "pending"]))
        if pending < entry.nonce:
            # Our tx waits behind a hole no one will fill: the account's next send takes the hole's nonce.
            log.warning("[sender] gap account=%s pending=%d nonce=%d", entry.account, pending, entry.nonce)
            self._state(entry.account).next_nonce = None

    def _state(self, address: str) -> _AccountState:
        return self._accounts.setdefault(address, _AccountState())

    async def _lookup(self, entry: JournalEntry) -> tuple[dict[str, Any] | None, bool]:
        """(receipt of any of the entry's signatures, whether its nonce was consumed by a tx not ours)."""
        # Order matters: read the mined count *before* the receipts, so "count passed our nonce and none of
        # ours has a receipt" cannot be a race with our own tx being mined in between.
        mined_count = hex_int(await self.rpc.call("eth_getTransactionCount", [entry.account, "latest"]))
        receipt = await self._receipt_of(entry)
        return receipt, receipt is None and mined_count > entry.nonce

    async def _receipt_of(self, entry: JournalEntry) -> dict[str, Any] | None:
        """The receipt of whichever of the entry's signatures is mined (at most one can be)."""
        return await self.receipts.receipt_of(entry.tx_hashes)

    async def _poll_receipt(self, entry: JournalEntry) -> dict[str, Any] | None:
        return await self.receipts.wait(entry.tx_hashes, self.config.receipt_timeout_s)

    async def _bump(self, entry: JournalEntry, account: LocalAccount) -> JournalEntry:
        """Re-sign the same nonce with higher fees: whichever signature is mined, the change happens once."""
        fields = dict(entry.tx_fields)
        for _ in range(self.config.max_fee_bumps + 1):
            for name in ("maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
                if name in fields:
                    fields[name] = max(math.ceil(fields[name] * self.config.fee_bump_ratio), fields[name] + 1)
            bumped = self._sign(account, entry.key, fields)
            log.warning("[sender] bump key=%s nonce=%d tx=%s", entry.key, entry.nonce, bumped.tx_hashes[-1])
            try:
                await self._broadcast(bumped)
                return bumped
            except RpcError as exc:
                if exc.message_has("underpriced"):
                    continue  # the pool's bar is higher than our bump: bump again, same nonce
                if exc.message_has("nonce too low"):
                    return bumped  # an earlier signature was mined meanwhile: _settle finds its receipt
                raise
        return bumped

    async def _finish(self, entry: JournalEntry, raw_receipt: dict[str, Any]) -> SentTx:
        receipt = Receipt.of(raw_receipt)
        tx_hash, block, gas_used = receipt.tx_hash, receipt.block_number, receipt.gas_used
        if hex_int(raw_receipt["status"]) == 1:
            self.journal.record_receipt(entry.key, "mined", receipt)
            log.info("[sender] mined key=%s tx=%s block=%d gas=%d", entry.key, tx_hash, block, gas_used)
            return _sent(self.journal.get(entry.key))  # type: ignore[arg-type]
        gas_limit = int(entry.tx_fields["gas"])
        if gas_used >= gas_limit * OUT_OF_GAS_RATIO:
            # (A real revert this close to the limit is retried with more gas and then reported as itself.)
            self.journal.record_receipt(entry.key, "failed", receipt)  # nothing happened: safe to sign afresh
            raise _OutOfGas(gas_limit)
        self.journal.record_receipt(entry.key, "reverted", receipt)
        revert = await self.chain.replay_revert(entry.account, entry.tx_fields, tx_hash, block)
        log.warning("[sender] reverted key=%s tx=%s block=%d error=%s", entry.key, tx_hash, block, revert)
        raise revert


def _check_same_change(entry: JournalEntry, account: LocalAccount, request: TxRequest) -> None:
    fields = entry.tx_fields
    if (entry.account, fields["to"].lower(), fields["data"], fields["value"]) != (
        account.address,
        request.to.lower(),
        request.data,
        request.value_wei,
    ):
        raise ValueError(
            f"idempotency key {entry.key!r} was used for a different transaction; keys must be unique"
        )


def _sent(entry: JournalEntry) -> SentTx:
    return SentTx(
        key=entry.key,
        tx_hash=entry.mined_hash or entry.tx_hashes[-1],
        account=entry.account,
        nonce=entry.nonce,
        block_number=entry.block_number or 0,
        gas_used=entry.gas_used or 0,
    )
