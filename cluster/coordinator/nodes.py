"""The farm's node accounts on chain: one per task place, derived from the operator's key by index.

On start each account is brought to Available: funded by the operator if it cannot pay its stake and gas,
joined with its card model (or resumed if paused). An account of a card model the card guard paused is
brought to Paused instead, and stays so across restarts until the operator lifts the pause. Keys of these
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
from cluster.failpoints import NO_FAILPOINTS, Failpoints
from cluster.protocol.cards import CardModel

log = logging.getLogger(__name__)
T = TypeVar("T")
GAS_RESERVE_WEI = 10**17  # what a node keeps for its gas by default (funds/ keeps it so afterwards)


@dataclass(frozen=True, slots=True)
class NodeAccount:
    """One node on chain: a task place of the farm, with its own key, stake and card model."""

    index: int  # the derivation index of its key
    account: LocalAccount  # its signer
    card: CardModel

    @property
    def address(self) -> str:
        return self.account.address


class NodeSet:
    """The farm's accounts, found by address or by card model. Accounts are only ever added (a machine
    that joins brings places; a place lost pauses its account, it does not remove it)."""

    def __init__(self, keys: OperatorKeys, cards: Sequence[CardModel] = ()):
        self.keys = keys
        self.accounts: list[NodeAccount] = []
        self._by_address: dict[str, NodeAccount] = {}
        self.add(enumerate(cards))

    def add(self, accounts: Iterable[tuple[int, CardModel]]) -> list[NodeAccount]:
        """Derive the accounts of these indices (each with its card model); the ones added."""
        added = [NodeAccount(i, self.keys.node(i), card) for i, card in accounts]
        self.accounts += added
        self.accounts.sort(key=lambda node: node.index)
        self._by_address.update((node.address, node) for node in added)
        return added

    @property
    def next_index(self) -> int:
        return max((node.index for node in self.accounts), default=-1) + 1

    def __contains__(self, address: object) -> bool:
        return address in self._by_address

    def __getitem__(self, address: str) -> NodeAccount:
        return self._by_address[address]

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.accounts]

    @property
    def cards(self) -> list[CardModel]:
        return sorted({node.card for node in self.accounts}, key=lambda card: card.key)

    def of_card(self, card: CardModel) -> list[NodeAccount]:
        return [node for node in self.accounts if node.card == card]

    def card_named(self, key_text: str) -> CardModel:
        """The farm's one card model whose key is ``key_text`` or starts with it; KeyError otherwise."""
        matching = [card for card in self.cards if card.matches(key_text)]
        if len(matching) != 1:
            known = ", ".join(card.describe() for card in self.cards)
            raise KeyError(f"{key_text!r} names {len(matching)} of this farm's card models: {known}")
        return matching[0]


# Node accounts brought up at once: a farm of a thousand accounts joins in a minute, not one after another.
# The sender gives concurrent sends of one account consecutive nonces (the operator funds them all).
BRING_UP_CONCURRENCY = 64


async def bring_up(
    ops: ChainOps,
    operator: LocalAccount,
    accounts: Iterable[NodeAccount],
    paused_cards: Collection[bytes] = (),
    *,
    kept_paused: Collection[str] = (),
    failpoints: Failpoints = NO_FAILPOINTS,
    gas_reserve_wei: int = GAS_RESERVE_WEI,
) -> dict[str, NodeStatus]:
    """Fund, join or resume every account, or pause those of a paused card model and the ``kept_paused``
    ones (spare: the farm has fewer places than accounts); each node's status after.

    Safe to run again at any point: what a crash left half done is finished, nothing is done twice (the
    transactions' keys carry the node's own transaction count; a node that joined is no longer Quit).
    """
    stake_wei = await ops.node_stake_wei()

    async def one(node: NodeAccount) -> tuple[str, NodeStatus]:
        is_paused = node.card.key in paused_cards or node.address in kept_paused
        return node.address, await _bring_up_one(
            ops, operator, node, stake_wei, gas_reserve_wei, is_paused, failpoints
        )

    return dict(await _for_each(accounts, one))


async def _bring_up_one(
    ops: ChainOps,
    operator: LocalAccount,
    node: NodeAccount,
    stake_wei: int,
    gas_reserve_wei: int,
    is_paused: bool,
    failpoints: Failpoints,
) -> NodeStatus:
    address = node.address
    status = await ops.node_status(address)
    generation = await ops.transaction_count(address)
    if is_paused:
        if status in (NodeStatus.AVAILABLE, NodeStatus.BUSY):
            await ops.pause(node.account, generation)
            log.warning("[coordinator] node kept paused node=%s card=%s", address, node.card.short_id)
    elif status is NodeStatus.QUIT:
        needed = stake_wei + gas_reserve_wei
        balance = await ops.balance(address)
        if balance < needed:
            await ops.fund(operator, address, needed - balance, generation)
            failpoints.reached("funded", f"node={node.index}")
        await ops.join(node.account, node.card, stake_wei, generation)
        failpoints.reached("joined", f"node={node.index}")
        log.info("[coordinator] node joined node=%s card=%s", address, node.card.short_id)
    elif status is NodeStatus.PAUSED:
        await ops.resume(node.account, generation)
        log.info("[coordinator] node resumed node=%s", address)
    else:
        return status  # nothing sent: the status read is current
    return await ops.node_status(address)


async def pause_all(ops: ChainOps, accounts: Iterable[NodeAccount]) -> None:
    """Pause every node: available ones at once, busy ones when their task ends (PendingPause)."""

    async def pause(node: NodeAccount) -> None:
        if await ops.node_status(node.address) in (NodeStatus.AVAILABLE, NodeStatus.BUSY):
            await ops.pause(node.account, await ops.transaction_count(node.address))

    await _for_each(accounts, pause)


async def quit_all(ops: ChainOps, accounts: Iterable[NodeAccount]) -> None:
    """Quit every node: the stake comes back now (idle or paused) or when the node's task ends."""

    async def quit(node: NodeAccount) -> None:
        if await ops.node_status(node.address) in (NodeStatus.AVAILABLE, NodeStatus.BUSY, NodeStatus.PAUSED):
            await ops.quit(node.account, await ops.transaction_count(node.address))

    await _for_each(accounts, quit)


async def _for_each(
    accounts: Iterable[NodeAccount], action: Callable[[NodeAccount], Awaitable[T]]
) -> list[T]:
    """``action`` on every account, ``BRING_UP_CONCURRENCY`` at a time; the first failure cancels the rest."""
    limit = asyncio.Semaphore(BRING_UP_CONCURRENCY)

    async def limited(node: NodeAccount) -> T:
        async with limit:
            return await action(node)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(limited(node)) for node in accounts]
    return [task.result() for task in tasks]
