"""The default fee rule: pay a fixed price per second of the run time the chain itself estimates.

The TaskQueue orders tasks by value = fee / estimatedMs, with estimatedMs = base[type] + perUnit[type] * cap
read from the contract (owner-settable). Paying ``wei_per_second * estimatedMs / 1000`` therefore gives
every task of one application the same value, whatever its size: an application states what a second of
the network is worth to it, and the queue ranks it against other applications on exactly that number.
"""

from __future__ import annotations

from dataclasses import dataclass

# 0.01 CNX per estimated second: a default GPT task (256 tokens, 22.8 s) pays 0.228 CNX and a default
# SD task (6 images, 200 s) 2 CNX.
DEFAULT_WEI_PER_SECOND = 10**16


@dataclass(frozen=True, slots=True)
class PricePolicy:
    wei_per_second: int = DEFAULT_WEI_PER_SECOND
    min_fee_wei: int = 1  # the client also never quotes below the contract's minTaskFee

    def __post_init__(self) -> None:
        if self.wei_per_second < 0 or self.min_fee_wei < 1:
            raise ValueError(f"{self.wei_per_second=} must be >= 0 and {self.min_fee_wei=} >= 1")

    def fee_for(self, estimated_ms: int) -> int:
        """The fee of a task the chain estimates at ``estimated_ms``, rounded up to a whole wei."""
        return max(self.min_fee_wei, -(-self.wei_per_second * estimated_ms // 1000))


def fee_to_outbid(estimated_ms: int, lowest_fee_wei: int, lowest_estimated_ms: int) -> int:
    """The smallest fee whose value is strictly above the lowest queued task's (TaskQueue._isHigher).

    ``fee * lowestMs > lowestFee * estimatedMs`` exactly, in integers, as the contract compares.
    """
    return lowest_fee_wei * estimated_ms // lowest_estimated_ms + 1


# -- sampled audits (issue 28; docs/protocol-decisions.md, "Sampled audits", 2 and 10) -----------------

BPS = 10_000
RUNS_PER_FULL_TASK = 3  # a Full task's fee pays three runs: the price policy's fee is that


@dataclass(frozen=True, slots=True)
class AuditTerms:
    """The chain's terms for sampled tasks, read when a task is priced: ``Task.auditRate()`` N,
    ``Task.AUDIT_MARGIN_BPS()`` and ``Node.nodeStake()``. At N = 1 a sampled request is a Full task."""

    audit_rate: int
    margin_bps: int
    node_stake_wei: int

    @property
    def samples(self) -> bool:
        return self.audit_rate > 1

    def _twice_margin(self) -> int:
        return 2 * (BPS + self.margin_bps)

    def premium(self, fee_wei: int) -> int:
        """The audit pool's part of a sampled fee, as the contract takes it: fee * 2(1+m) / (N + 2(1+m))."""
        return fee_wei * self._twice_margin() // (self.audit_rate * BPS + self._twice_margin())

    def run_pay(self, fee_wei: int) -> int:
        """What a sampled task's one node is paid: the fee less the premium."""
        return fee_wei - self.premium(fee_wei)

    @property
    def max_run_pay_wei(self) -> int:
        """The most a sampled run may pay: nodeStake / (2 N) (the contract's SampledFeeTooHigh above it)."""
        return self.node_stake_wei // (2 * self.audit_rate)

    def sampled_fee(self, run_wei: int) -> int:
        """The fee that pays one run of ``run_wei`` and its premium: p (1 + 2(1+m)/N), rounded up, so
        that the contract's run pay of it is at least ``run_wei``."""
        n = self.audit_rate * BPS
        return -(-run_wei * (n + self._twice_margin()) // n)

    def sampled_fee_for_full(self, full_fee_wei: int) -> int:
        """The sampled fee of a task whose Full fee (three runs) is ``full_fee_wei``: one run's worth is a
        third of it."""
        return self.sampled_fee(-(-full_fee_wei // RUNS_PER_FULL_TASK))
