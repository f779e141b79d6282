"""What the operator chose about the farm's money, in wei (``network.operator`` in the config, in CNX)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from eth_utils import to_checksum_address

from cluster.config import OperatorConfig

WEI_PER_CNX = 10**18


def cnx_to_wei(cnx: float) -> int:
    return int(Decimal(str(cnx)) * WEI_PER_CNX)  # through the decimal text: 0.1 CNX is exactly 10**17 wei


@dataclass(frozen=True, slots=True)
class FundsSettings:
    gas_reserve_wei: int = 10**17
    """What each node account keeps for its gas: topped up to it once below half, swept down to it. Raised
    to ``gas_reserve_rounds`` rounds' gas at the current price when larger, and never below what the
    dearest transactions cost (``gas.MIN_RESERVE_TXS``): the account can always send its next one while a
    top-up is on its way."""
    gas_reserve_rounds: int = 0
    payout_address: str | None = None
    """Where sweeps send the earnings; None: no sweeps (``payout`` and ``retire`` refuse)."""
    sweep_threshold_wei: int = 10**18
    """A scheduled sweep moves a node's balance above its reserve once it is at least this much (a smaller
    amount is not worth its gas). ``python -m cluster payout`` moves any amount worth more than its gas."""
    sweep_every_s: float = 0.0
    """The sweep schedule; 0: only on demand. (The config's default is a day; tests run without one.)"""
    operator_low_wei: int | None = None
    """The operator account is low below this; None: the cost of topping up every active node once."""
    sweep_concurrency: int = 64
    """Accounts swept at once (as many as are brought up at once)."""

    def __post_init__(self) -> None:
        if min(self.gas_reserve_wei, self.gas_reserve_rounds, self.sweep_threshold_wei) < 0:
            raise ValueError(
                f"{self.gas_reserve_wei=}, {self.gas_reserve_rounds=} and {self.sweep_threshold_wei=} "
                "must be >= 0"
            )
        if self.sweep_concurrency < 1:
            raise ValueError(f"{self.sweep_concurrency=} must be >= 1")
        if self.payout_address is not None:
            object.__setattr__(self, "payout_address", to_checksum_address(self.payout_address))

    @classmethod
    def of(cls, operator: OperatorConfig) -> FundsSettings:
        low = operator.operator_low_cnx
        return cls(
            gas_reserve_wei=cnx_to_wei(operator.gas_reserve_cnx),
            gas_reserve_rounds=operator.gas_reserve_rounds,
            payout_address=operator.payout_address,
            sweep_threshold_wei=cnx_to_wei(operator.sweep_threshold_cnx),
            sweep_every_s=operator.sweep_every_s,
            operator_low_wei=None if low is None else cnx_to_wei(low),
        )


class PayoutRefused(ValueError):
    """A sweep was asked for that the settings do not allow (no payout address); the message says which
    option to set."""


def require_payout_address(settings: FundsSettings) -> str:
    if settings.payout_address is None:
        raise PayoutRefused(
            "no payout address: set network.operator.payout_address (HELIUM_PAYOUT_ADDRESS on "
            "network=public) to the account that receives the farm's earnings"
        )
    return settings.payout_address
