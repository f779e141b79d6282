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
