"""The farm's availability on chain follows the task places it really has, per card model.

A place is one task a worker runs at once, and one node account stands for it on chain (a node holds one
task at a time). Machines join, drain, fail and come back, so the places of a card model move; the
accounts follow without a restart:
- fewer places than serving accounts: the extra accounts become *spare* and are paused on chain (idle
  ones first; a busy one's pause waits for its task, ``PendingPause``), so the chain stops selecting them;
- more places: spare accounts are resumed first (lowest index first), then new accounts are derived at
  the next indices, funded and joined, a new card model's included;
- a card model superseded by an upgrade (the same GPU now served under another runtime tag) with no place
  left: its accounts quit, and with a payout address they are retired (stakes swept).

Which account is spare is stored before the chain hears of it (``AccountRegistry``), so a restart pauses
or resumes exactly the same accounts. Accounts never move between card models and are never forgotten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cluster.coordinator.store import AccountRow
from cluster.protocol.cards import CardModel


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    spare: list[int] = field(default_factory=list)  # serving account indices to pause
    serve: list[int] = field(default_factory=list)  # spare account indices to resume
    derive: list[CardModel] = field(default_factory=list)  # one new account per place still short
    superseded: list[CardModel] = field(default_factory=list)  # upgraded away, no place left

    @property
    def is_empty(self) -> bool:
        return not (self.spare or self.serve or self.derive or self.superseded)


def places_of(cards: Iterable[CardModel]) -> dict[CardModel, int]:
    """Places per card model from one card model per place (the list a coordinator is started with)."""
    return dict(Counter(cards))


def is_superseded(card: CardModel, places: Mapping[CardModel, int]) -> bool:
    """No place serves ``card`` and the same GPU is served under another runtime tag: an upgrade moved it."""
    if places.get(card, 0) > 0:
        return False
    return any(
        count > 0 and other.gpu_name == card.gpu_name and other.vram_gb == card.vram_gb and other != card
        for other, count in places.items()
    )


def plan_capacity(
    rows: Iterable[AccountRow],
    places: Mapping[CardModel, int],
    *,
    busy: Collection[int] = (),
    leaving: Collection[int] = (),
) -> CapacityPlan:
    """What to change so that each card model has as many serving accounts as places.

    ``busy``: indices of accounts in an unfinished round (paused last). ``leaving``: indices retiring or
    quit on purpose; they count for nothing, and a card model with any is never given new accounts (the
    operator is taking it out).
    """
    rows = list(rows)
    by_card: dict[CardModel, list[AccountRow]] = {}
    for row in rows:
        by_card.setdefault(row.card, []).append(row)
    plan = CapacityPlan()
    for card in sorted({*by_card, *places}, key=lambda c: c.key):
        want = places.get(card, 0)
        own = [row for row in by_card.get(card, []) if row.index not in leaving]
        serving = [row.index for row in own if not row.is_spare]
        spare = sorted(row.index for row in own if row.is_spare)
        if len(serving) > want:  # idle ones first, the newest first
            ordered = sorted(serving, key=lambda index: (index in busy, -index))
            plan.spare.extend(ordered[: len(serving) - want])
        elif len(serving) < want:
            short = want - len(serving)
            plan.serve.extend(spare[:short])
            short -= len(spare[:short])
            is_leaving = any(row.index in leaving for row in by_card.get(card, []))
            if short and not is_leaving:
                plan.derive.extend([card] * short)
        if own and is_superseded(card, places):
            plan.superseded.append(card)
    return plan
