"""The ledger's values: typed, because they cross Ray and ``ledger --csv`` / ``status --json`` hand them on.

Amounts are wei (exact integers); stakes pass SQLite's 64-bit integers, so the store keeps them as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

WEI_PER_CNX = 10**18
OPERATOR_CARD = "operator"  # the card label of the operator account: it runs no task, it pays the top-ups
OTHER_CARD = "other"  # an account the ledger was never told of (none, unless a journal is shared)


class LedgerKind(StrEnum):
    """What moved an account's money, each from one source (the module doc of ``cluster.ledger.entries``)."""

    FEE = "fee"  # TaskNodeSuccess: the node's share of a task's fee
    COMPENSATION = "compensation"  # TaskNodeCompensated: paid for arguments that never came
    GAS = "gas"  # gasUsed x effectiveGasPrice of every mined transaction the account sent
    SLASHED = "slashed"  # NodeSlashed: the stake lost to the treasury
    TOPUP = "topup"  # the operator's transfers to the node (bring-up funding, gas top-ups)
    PAYOUT = "payout"  # the node's transfers out to the payout address (sweeps, payouts)
    STAKED = "staked"  # the stake a join paid
    UNSTAKED = "unstaked"  # NodeStakeRefunded: the stake back after a quit or a kick-out


class LedgerAmounts(BaseModel):
    """One account's (or a sum of accounts') amounts, wei, by kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fee_wei: int = Field(default=0, ge=0)
    compensation_wei: int = Field(default=0, ge=0)
    gas_wei: int = Field(default=0, ge=0)
    slashed_wei: int = Field(default=0, ge=0)
    topup_wei: int = Field(default=0, ge=0)
    payout_wei: int = Field(default=0, ge=0)
    staked_wei: int = Field(default=0, ge=0)
    unstaked_wei: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, by_kind: Mapping[LedgerKind, int]) -> LedgerAmounts:
        return cls(**{f"{kind.value}_wei": amount for kind, amount in by_kind.items()})

    def __getitem__(self, kind: LedgerKind) -> int:
        return getattr(self, f"{kind.value}_wei")

    def __add__(self, other: LedgerAmounts) -> LedgerAmounts:
        return LedgerAmounts.of({kind: self[kind] + other[kind] for kind in LedgerKind})

    @property
    def earned_wei(self) -> int:
        """What tasks paid: fees and compensations."""
        return self.fee_wei + self.compensation_wei

    @property
    def net_of_gas_wei(self) -> int:
        """Earnings net of gas (the dashboard's figure); slashes are shown beside it, not in it."""
        return self.earned_wei - self.gas_wei

    @property
    def balance_change_wei(self) -> int:
        """What these entries did to the accounts' balances on chain: every movement of an account's money
        in or out, so a test can hold it against the balances themselves."""
        inflow = self.topup_wei + self.earned_wei + self.unstaked_wei
        return inflow - self.gas_wei - self.payout_wei - self.staked_wei


class LedgerRow(BaseModel):
    """One day of one card model (``account`` None: its accounts summed) or of one account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    day: str  # YYYY-MM-DD of the blocks' time, UTC
    card: str  # card model short id, or OPERATOR_CARD
    account: str | None = None
    amounts: LedgerAmounts


class LedgerTotals(BaseModel):
    """Everything the ledger holds, summed: the farm's and each card model's (``status``, the metrics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    farm: LedgerAmounts = LedgerAmounts()
    by_card: dict[str, LedgerAmounts] = {}


def cnx_text(wei: int) -> str:
    """Wei as an exact decimal of CNX (18 places): what the CSV holds, so sums never round."""
    sign, wei = ("-", -wei) if wei < 0 else ("", wei)
    return f"{sign}{wei // WEI_PER_CNX}.{wei % WEI_PER_CNX:018d}"


class LedgerReport(BaseModel):
    """What ``python -m cluster ledger`` prints: the rows, the card models they name, the totals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: list[LedgerRow]
    cards: dict[str, str]  # card short id -> GPU name, VRAM, runtime
    totals: LedgerTotals
