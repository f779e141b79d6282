"""The farm's node accounts on chain: one per GPU slot, derived from the operator's key by index.

On start each slot is brought to Available: funded by the operator if it cannot pay its stake and gas,
joined with its card model (or resumed if paused). Keys of these transactions carry the node's own
transaction count, so a restart before a transaction is mined re-sends the same signed bytes, and a
restart after it is mined finds the new status and sends nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.chain_ops import ChainOps

log = logging.getLogger(__name__)
GAS_RESERVE_WEI = 10**17  # what a node keeps for the gas of its task transactions (0.1 CNX)


@dataclass(frozen=True, slots=True)
class Slot:
    index: int  # the node account's derivation index
    account: LocalAccount
    card: tuple[str, int, str]  # gpuName, gpuVramGB, runtime
    card_key: bytes


async def bring_up(ops: ChainOps, operator: LocalAccount, slots: list[Slot]) -> dict[str, NodeStatus]:
    """Fund, join or resume every slot; returns each node's status afterwards."""
    stake_wei = await ops.node_stake_wei()
    statuses = {}
    for slot in slots:
        address = slot.account.address
        status = await ops.node_status(address)
        generation = await ops.w3.eth.get_transaction_count(address)
        if status is NodeStatus.QUIT:
            needed = stake_wei + GAS_RESERVE_WEI
            balance = await ops.balance(address)
            if balance < needed:
                await ops.fund(operator, address, needed - balance, generation)
            await ops.join(slot.account, slot.card, stake_wei, generation)
            log.info("[coordinator] node joined node=%s card=%s", address, slot.card[0])
        elif status is NodeStatus.PAUSED:
            await ops.resume(slot.account, generation)
            log.info("[coordinator] node resumed node=%s", address)
        statuses[address] = await ops.node_status(address)
    return statuses


async def pause_all(ops: ChainOps, slots: list[Slot]) -> None:
    """Pause every node: available ones at once, busy ones when their task ends (PendingPause)."""
    for slot in slots:
        if await ops.node_status(slot.account.address) in (NodeStatus.AVAILABLE, NodeStatus.BUSY):
            generation = await ops.w3.eth.get_transaction_count(slot.account.address)
            await ops.pause(slot.account, generation)


async def quit_all(ops: ChainOps, slots: list[Slot]) -> None:
    """Quit every node: the stake comes back now (idle or paused) or when the node's task ends."""
    for slot in slots:
        if await ops.node_status(slot.account.address) in (
            NodeStatus.AVAILABLE,
            NodeStatus.BUSY,
            NodeStatus.PAUSED,
        ):
            generation = await ops.w3.eth.get_transaction_count(slot.account.address)
            await ops.quit(slot.account, generation)
