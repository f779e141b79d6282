"""The farm's node accounts on chain: one per task place, derived from the operator's key by index.

On start each slot is brought to Available: funded by the operator if it cannot pay its stake and gas,
joined with its card model (or resumed if paused). A slot of a card model the guard paused is brought to
Paused instead, and stays so across restarts until the operator lifts the pause. Keys of these
transactions carry the node's own transaction count, so a restart before a transaction is mined re-sends
the same signed bytes, and a restart after it is mined finds the new status and sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from eth_account.signers.local import LocalAccount

from cluster.chain.accounts import OperatorKeys
from cluster.chain.contracts import NodeStatus
from cluster.coordinator.chain_ops import ChainOps
from cluster.protocol.cards import CardModel
from cluster.test_hooks import NO_HOOKS, TestHooks

log = logging.getLogger(__name__)
T = TypeVar("T")
GAS_RESERVE_WEI = 10**17  # what a node keeps for the gas of its task transactions (0.1 CNX)


@dataclass(frozen=True, slots=True)
class Slot:
    index: int  # the node account's derivation index
    account: LocalAccount
    card: CardModel

    @property
    def address(self) -> str:
        return self.account.address


class NodeSet:
    """The farm's slots, found by address or by card model."""

    def __init__(self, keys: OperatorKeys, cards: Sequence[CardModel]):
        self.slots = [Slot(i, keys.node(i), card) for i, card in enumerate(cards)]
        self._by_address = {slot.address: slot for slot in self.slots}

    def __contains__(self, address: object) -> bool:
        return address in self._by_address

    def __getitem__(self, address: str) -> Slot:
        return self._by_address[address]

    @property
    def addresses(self) -> list[str]:
        return [slot.address for slot in self.slots]

    @property
    def cards(self) -> list[CardModel]:
        return sorted({slot.card for slot in self.slots}, key=lambda card: card.key)

    def of_card(self, card: CardModel) -> list[Slot]:
        return [slot for slot in self.slots if slot.card == card]


# Node accounts brought up at once: a farm of a thousand slots joins in a minute, not one after another.
# The sender gives concurrent sends of one account consecutive nonces (the operator funds them all).
BRING_UP_CONCURRENCY = 64


async def bring_up(
    ops: ChainOps,
    operator: LocalAccount,
    slots: Iterable[Slot],
    paused_cards: Collection[bytes] = (),
    *,
    hooks: TestHooks = NO_HOOKS,
) -> dict[str, NodeStatus]:
    """Fund, join or resume every slot, or pause those of a paused card model; each node's status after.

    Safe to run again at any point: what a crash left half done is finished, nothing is done twice (the
    transactions' keys carry the node's own transaction count; a node that joined is no longer Quit).
    """
    stake_wei = await ops.node_stake_wei()

    async def one(slot: Slot) -> tuple[str, NodeStatus]:
        is_paused = slot.card.key in paused_cards
        return slot.address, await _bring_up_one(ops, operator, slot, stake_wei, is_paused, hooks)

    return dict(await _for_each(slots, one))


async def _bring_up_one(
    ops: ChainOps, operator: LocalAccount, slot: Slot, stake_wei: int, is_paused: bool, hooks: TestHooks
) -> NodeStatus:
    address = slot.address
    status = await ops.node_status(address)
    generation = await ops.transaction_count(address)
    if is_paused:
        if status in (NodeStatus.AVAILABLE, NodeStatus.BUSY):
            await ops.pause(slot.account, generation)
            log.warning("[coordinator] node kept paused node=%s card=%s", address, slot.card.short_id)
    elif status is NodeStatus.QUIT:
        needed = stake_wei + GAS_RESERVE_WEI
        balance = await ops.balance(address)
        if balance < needed:
            await ops.fund(operator, address, needed - balance, generation)
            hooks.reached("funded", f"node={slot.index}")
        await ops.join(slot.account, slot.card, stake_wei, generation)
        hooks.reached("joined", f"node={slot.index}")
        log.info("[coordinator] node joined node=%s card=%s", address, slot.card.short_id)
    elif status is NodeStatus.PAUSED:
        await ops.resume(slot.account, generation)
        log.info("[coordinator] node resumed node=%s", address)
    else:
        return status  # nothing sent: the status read is current
    return await ops.node_status(address)


async def pause_all(ops: ChainOps, slots: Iterable[Slot]) -> None:
    """Pause every node: available ones at once, busy ones when their task ends (PendingPause)."""

    async def pause(slot: Slot) -> None:
        if await ops.node_status(slot.address) in (NodeStatus.AVAILABLE, NodeStatus.BUSY):
            await ops.pause(slot.account, await ops.transaction_count(slot.address))

    await _for_each(slots, pause)


async def quit_all(ops: ChainOps, slots: Iterable[Slot]) -> None:
    """Quit every node: the stake comes back now (idle or paused) or when the node's task ends."""

    async def quit(slot: Slot) -> None:
        if await ops.node_status(slot.address) in (NodeStatus.AVAILABLE, NodeStatus.BUSY, NodeStatus.PAUSED):
            await ops.quit(slot.account, await ops.transaction_count(slot.address))

    await _for_each(slots, quit)


async def _for_each(slots: Iterable[Slot], action: Callable[[Slot], Awaitable[T]]) -> list[T]:
    """``action`` on every slot, ``BRING_UP_CONCURRENCY`` at a time; the first failure cancels the rest."""
    limit = asyncio.Semaphore(BRING_UP_CONCURRENCY)

    async def limited(slot: Slot) -> T:
        async with limit:
            return await action(slot)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(limited(slot)) for slot in slots]
    return [task.result() for task in tasks]
