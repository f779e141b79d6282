"""The sender's typed inputs, outputs and settings (kept apart so callers can import them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class TxRequest:
    """One contract call to send. ``gas=None`` estimates it (and surfaces a revert before spending gas);
    ``gas_floor`` is the least gas signed even so: for a call whose cost depends on what lands before it
    (a join that makes a card model's third node, or starts a queued task), where the estimate of the
    moment is too low. ``gas_allowance`` is signed above the estimate: for a call that draws nodes, whose
    mined block's randomness is not the estimate's (``cluster.chain.contracts.DRAW_GAS_ALLOWANCE``)."""

    to: str
    data: str = "0x"
    value_wei: int = 0
    gas: int | None = None
    gas_floor: int = 0
    gas_allowance: int = 0

    @classmethod
    def call(
        cls, contract: Any, fn_name: str, *args: Any, value_wei: int = 0, gas: int | None = None,
        gas_floor: int = 0, gas_allowance: int = 0,
    ) -> TxRequest:  # fmt: skip
        """From a web3 contract object (sync or async) and a function name: works with any ABI."""
        data = contract.encode_abi(fn_name, args=list(args))
        return cls(contract.address, data, value_wei, gas, gas_floor, gas_allowance)


class SentTx(BaseModel):
    """A mined, successful transaction. (A mined revert raises ``ContractRevert`` instead.)"""

    model_config = ConfigDict(frozen=True)
    key: str
    tx_hash: str
    account: str
    nonce: int
    block_number: int
    gas_used: int
    status: int = 1


class TxTimeout(Exception):
    """Not mined within the receipt timeout after every fee bump. ``send`` with the same key resumes it."""


@dataclass(slots=True)
class SenderConfig:
    gas_margin: float = 1.2
    """Estimated gas is multiplied by this: state can change between estimate and inclusion."""
    receipt_timeout_s: float = 60.0
    """How long one signature may stay unmined before its fees are bumped."""
    poll_interval_s: float = 0.25
    max_fee_bumps: int = 3
    fee_bump_ratio: float = 1.125
    """geth and anvil refuse a same-nonce replacement that raises fees by less than 10%."""
    max_nonce_resyncs: int = 3
    max_gas_retries: int = 3
    """Out-of-gas reverts re-signed with twice the gas before giving up."""
    confirmations: int = 0
    """Blocks a receipt must be deep before the send returns; a reorg above that depth that drops the
    transaction is met by sending the same signed bytes again."""

    def __post_init__(self) -> None:
        if self.gas_margin < 1.0 or self.fee_bump_ratio <= 1.1 or self.confirmations < 0:
            raise ValueError(
                f"{self.gas_margin=} must be >= 1, {self.fee_bump_ratio=} > 1.1, {self.confirmations=} >= 0"
            )
