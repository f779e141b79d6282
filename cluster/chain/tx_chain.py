"""What the sender asks the chain about one transaction: chain id, fees, gas, and why it reverted."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from cluster.chain.revert import ContractRevert, RevertDecoder
from cluster.chain.rpc import RpcClient, RpcError, hex_int
from cluster.chain.tx_types import TxRequest


class TxChain:
    """Chain reads for building and explaining transactions; reverts come back as ``ContractRevert``."""

    def __init__(
        self, rpc: RpcClient, decoder: RevertDecoder, *, gas_margin: float, fee_quote_ttl_s: float = 2.0
    ):
        self.rpc = rpc
        self.decoder = decoder
        self.gas_margin = gas_margin
        self.fee_quote_ttl_s = fee_quote_ttl_s
        self._chain_id: int | None = None
        self._fees: tuple[float, dict[str, int]] | None = None  # (when asked, the quote)
        self._fees_asking: asyncio.Lock | None = None

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = hex_int(await self.rpc.call("eth_chainId", []))
        return self._chain_id

    async def fees(self) -> dict[str, int]:
        """The fee fields to sign with, quoted at most every ``fee_quote_ttl_s`` for all concurrent sends:
        the quote leaves room for the base fee to grow (``_quote``), and a send that stalls is bumped."""
        if self._fees_asking is None:
            self._fees_asking = asyncio.Lock()
        async with self._fees_asking:
            now = time.monotonic()
            if self._fees is None or now - self._fees[0] > self.fee_quote_ttl_s:
                self._fees = (now, await self._quote())
            return dict(self._fees[1])

    async def _quote(self) -> dict[str, int]:
        """EIP-1559 fee fields where the chain has a base fee (anvil does), a legacy gas price elsewhere."""
        block = await self.rpc.call("eth_getBlockByNumber", ["latest", False])
        if block.get("baseFeePerGas") is None:
            return {"gasPrice": hex_int(await self.rpc.call("eth_gasPrice", []))}
        try:
            tip = hex_int(await self.rpc.call("eth_maxPriorityFeePerGas", []))
        except RpcError:
            tip = 10**9  # nodes without the method: 1 gwei, the usual floor
        # Twice the base fee survives six full blocks of +12.5% base-fee growth before the tx stalls.
        return {"maxFeePerGas": 2 * hex_int(block["baseFeePerGas"]) + tip, "maxPriorityFeePerGas": tip}

    async def estimate_gas(self, sender: str, request: TxRequest) -> int:
        """The gas limit to sign: the estimate times the margin. A revert raises ``ContractRevert`` here,
        before anything is signed or spent."""
        params = {"from": sender, "to": request.to, "data": request.data, "value": hex(request.value_wei)}
        try:
            estimate = hex_int(await self.rpc.call("eth_estimateGas", [params]))
        except RpcError as exc:
            raise self.as_revert(exc) from None
        return math.ceil(estimate * self.gas_margin)

    async def call(self, params: dict[str, Any], block: str) -> str:
        try:
            return await self.rpc.call("eth_call", [params, block])
        except RpcError as exc:
            raise self.as_revert(exc) from None

    async def replay_revert(
        self, account: str, fields: dict[str, Any], tx_hash: str, block: int
    ) -> ContractRevert:
        """The revert of a mined failure: replay the call on the state its block started from.

        The receipt carries no revert data, so the call is run again on the parent block's state: the
        state the transaction saw when it was the block's first (always so with anvil's automine).
        """
        params = {"from": account, "to": fields["to"], "data": fields["data"]}
        params |= {"value": hex(fields["value"]), "gas": hex(fields["gas"])}
        try:
            await self.rpc.call("eth_call", [params, hex(max(block - 1, 0))])
        except RpcError as exc:
            revert = self.as_revert(exc, tx_hash)
            if isinstance(revert, RpcError):
                raise revert from None
            return revert
        # The replay passed: state changed earlier in the block, or the tx ran out of gas. Nothing to decode.
        return ContractRevert(None, {}, b"", tx_hash=tx_hash)

    def as_revert(self, exc: RpcError, tx_hash: str | None = None) -> ContractRevert | RpcError:
        """The decoded revert inside an RPC error, or the error itself when it is not a revert."""
        data = RevertDecoder.revert_data(exc.data)
        if data is None and not exc.message_has("revert"):
            return exc
        return self.decoder.decode(data, tx_hash=tx_hash)
