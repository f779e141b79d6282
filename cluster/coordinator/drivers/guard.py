"""The card guard: the farm's own rounds of a task must agree before any of them commits.

A round that committed and then did not disclose would be slashed (Task.cancelTask), so the guard holds
the commitments, not the disclosures; a round that never committed is only cancelled. It stays with the
coordinator (the card models, the pauses): with round drivers, the siblings' results are asked of the
drivers that own their accounts (``fleet.py``); on the coordinator's own loop they are its store's rows.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from cluster.coordinator.chain_ops import ChainOps
from cluster.coordinator.nodes import NodeSet, pause_all
from cluster.coordinator.round_state import NodeTask, Step
from cluster.coordinator.store import RoundStore
from cluster.protocol.results import results_match

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sibling:
    """What the guard needs of another of the farm's rounds of the task."""

    round: int
    is_running: bool  # still executing: its result may yet come
    result: bytes | None

    @classmethod
    def of(cls, task: NodeTask) -> Sibling:
        return cls(task.round, task.step is Step.SELECTED and task.failure is None, task.result)


# (task id, this round, the results of the rounds that asked already) -> the farm's other rounds
Siblings = Callable[[int, int, Mapping[int, bytes]], Awaitable[list[Sibling]]]
REMEMBERED_TASKS = 10_000  # tasks whose rounds' results the guard keeps (a round asks again until it commits)


class CardGuard:
    def __init__(self, store: RoundStore, ops: ChainOps, nodes: NodeSet, siblings: Siblings):
        self.store = store  # the coordinator's: the pauses are kept there
        self.ops = ops
        self.nodes = nodes
        self.siblings = siblings
        self._paused_on_chain: set[bytes] = set()  # card models whose nodes this process paused
        self._asked: OrderedDict[int, dict[int, bytes]] = (
            OrderedDict()
        )  # task -> results of rounds that asked

    async def holds(self, task: NodeTask) -> bool:
        """True (and the card model paused) when the farm's other rounds of this task got another result;
        True too while one of them is still running: the farm's rounds of a task commit once all have
        executed."""
        assert task.result is not None
        asked = self._asked.setdefault(task.task_id, {})
        asked[task.round] = task.result  # a round that asks has executed: a sibling needs no call for it
        self._asked.move_to_end(task.task_id)
        while len(self._asked) > REMEMBERED_TASKS:
            self._asked.popitem(last=False)
        others = await self.siblings(task.task_id, task.round, asked)
        if any(other.is_running for other in others):
            return True  # not a disagreement yet: wait for the sibling's result
        results = {other.round: other.result for other in others if other.result}
        if all(results_match(task.task_type, task.result, other) for other in results.values()):
            return False
        card = self.nodes[task.node].card
        rounds = sorted([task.round, *results])
        reason = (
            f"the farm's own rounds disagree on task {task.task_id} (rounds {rounds}); card model "
            f"{card.describe()} paused, nothing committed; `python -m cluster resume-card {card.short_id}` "
            "once the card is fixed"
        )
        if self.store.pause_card(card.key, reason):  # durable before the chain hears of it
            log.error("[coordinator] ALERT %s", reason)
        if card.key not in self._paused_on_chain:
            await pause_all(self.ops, self.nodes.of_card(card))
            self._paused_on_chain.add(card.key)
        return True


def store_siblings(store: RoundStore) -> Siblings:
    """The siblings on the coordinator's own loop: the rows of its store."""

    async def siblings(task_id: int, round_: int, asked: Mapping[int, bytes]) -> list[Sibling]:
        return [Sibling.of(t) for t in store.of_task(task_id) if t.round != round_]

    return siblings
