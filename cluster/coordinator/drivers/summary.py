"""The rounds at a glance, as one driver (or the coordinator's own loop) has them, and several merged."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from cluster.coordinator.round_state import TaskCounts


class RoundsSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    counts: TaskCounts = TaskCounts()
    earnings_by_node: dict[str, int] = {}  # wei
    last_selected_chain_s: float | None = None
    busy_nodes: frozenset[str] = frozenset()  # accounts with an unfinished round
    num_running: int = 0  # rounds with a runner
    num_waiting_for_disk: int = 0
    num_waiting_for_gas: int = 0
    num_accounts: int = 0  # the accounts whose keys the driver holds (a restarted one is told again)


def merge(summaries: Iterable[RoundsSummary]) -> RoundsSummary:
    summaries = list(summaries)
    by_step: Counter = Counter()
    by_outcome: Counter = Counter()
    by_failure: Counter = Counter()
    by_sampling: Counter = Counter()
    earned: Counter = Counter()
    for summary in summaries:
        by_step.update(summary.counts.by_step)
        by_outcome.update(summary.counts.by_outcome)
        by_failure.update(summary.counts.by_failure)
        by_sampling.update(summary.counts.by_sampling)
        earned.update(summary.earnings_by_node)
    selected = [s.last_selected_chain_s for s in summaries if s.last_selected_chain_s is not None]
    return RoundsSummary(
        counts=TaskCounts(
            by_step=dict(by_step),
            by_outcome=dict(by_outcome),
            by_failure=dict(by_failure),
            by_sampling=dict(by_sampling),
        ),
        earnings_by_node=dict(earned),
        last_selected_chain_s=max(selected, default=None),
        busy_nodes=frozenset().union(*(s.busy_nodes for s in summaries)),
        num_running=sum(s.num_running for s in summaries),
        num_waiting_for_disk=sum(s.num_waiting_for_disk for s in summaries),
        num_waiting_for_gas=sum(s.num_waiting_for_gas for s in summaries),
        num_accounts=sum(s.num_accounts for s in summaries),
    )
