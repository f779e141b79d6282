"""Gathering the farm's status in the coordinator actor: its store, the chain, the workers, the relay.

The chain is read per node (status, QoS score, stake) concurrently; a worker that does not answer is
shown as down rather than failing the whole status.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httpx
import ray

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.round_state import Outcome
from cluster.protocol.cards import CardModel
from cluster.status.machines import machine_alerts
from cluster.status.model import CardView, CoordinatorStatus, Endpoints, FarmStatus, NodeView, WorkerView
from cluster.workers.messages import WorkerInfo

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cluster.coordinator.coordinator import Coordinator
    from cluster.coordinator.scheduling.pool import WorkerPool
    from cluster.status.model import MachineView

log = logging.getLogger(__name__)
RELAY_PROBE_TIMEOUT_S = 3.0


async def collect_status(
    coordinator: Coordinator, pool: WorkerPool, group_checks: dict[str, str]
) -> FarmStatus:
    infos = {info.worker_id: info for info in await pool.workers_info()}
    paused = coordinator.store.paused_cards()
    cards = [
        await _card_view(card, pool, infos, group_checks.get(card.short_id, ""), card.key in paused)
        for card in pool.card_models()
    ]
    rounds = coordinator.rounds.summary()  # here, or merged from the round drivers
    earned = rounds.earnings_by_node
    nodes = await asyncio.gather(
        *(
            _node_view(coordinator, node.address, node.card, earned.get(node.address, 0))
            for node in coordinator.accounts
        )
    )
    own = coordinator.status()  # the counts and the coordinator's own alerts (guard pauses, disk, chain)
    joined = {node.card for node in coordinator.accounts}
    machines = pool.machines()
    return FarmStatus(
        endpoints=await _endpoints(coordinator),
        cards=cards,
        nodes=sorted(nodes, key=lambda node: (node.card_short_id, node.address)),
        tasks=own.tasks,
        earned_wei=sum(earned.values()),
        alerts=_alerts(cards, nodes, own, [c for c in pool.card_models() if c not in joined], machines),
        last_selected_chain_s=rounds.last_selected_chain_s,
        ledger=own.ledger,
        funds=own.funds,
        machines=machines,
    )


async def _card_view(
    card: CardModel, pool: WorkerPool, infos: dict[str, WorkerInfo], check: str, is_paused: bool
) -> CardView:
    workers = [await _worker_view(worker_id, infos.get(worker_id), pool.namespace) for worker_id in
               pool.worker_ids(card)]  # fmt: skip
    return CardView(
        key="0x" + card.key.hex(), short_id=card.short_id, gpu_name=card.gpu_name, vram_gb=card.vram_gb,
        runtime=card.runtime, check=check, is_paused=is_paused, workers=workers,
    )  # fmt: skip


async def _worker_view(worker_id: str, info: WorkerInfo | None, namespace: str) -> WorkerView:
    if info is None:  # the pool counts it lost (being brought back)
        return WorkerView(worker_id=worker_id, is_alive=False, num_running=0, num_jobs=0, warm_models=[])
    try:  # the worker's own account of its cache (the pool's copy is only a scheduling hint)
        warm = await ray.get_actor(worker_id, namespace=namespace).loaded_models.remote()
    except Exception as exc:  # a worker dying now is shown as such, not raised
        log.warning("[status] worker did not answer worker=%s error=%r", worker_id, exc)
        warm = []
    used = info.gpu_memory_used_bytes
    if used is None:  # a CPU rig: the worker's model cache is what stands for its VRAM
        used = info.cache_used_bytes
    return WorkerView(
        worker_id=worker_id, is_alive=True, num_running=info.num_running, num_jobs=info.num_jobs,
        warm_models=sorted(warm), vram_used_bytes=None if used is None else int(used),
        vram_budget_bytes=info.cache_budget_bytes,
    )  # fmt: skip


def _status_name(coordinator: Coordinator, address: str, status: NodeStatus) -> str:
    """The status on chain, lower case; "retired" for an account the operator retired that has quit (out
    of the network on purpose: no alert)."""
    if status is NodeStatus.QUIT and coordinator.funds.is_retiring(address):
        return "retired"
    return status.name.lower()


async def _node_view(coordinator: Coordinator, address: str, card: CardModel, earned_wei: int) -> NodeView:
    ops = coordinator.ops
    status, qos, info = await asyncio.gather(
        ops.node_status(address), ops.qos_score(address), ops.node.functions.nodeInfo(address).call()
    )
    names = [c["name"] for c in ops.node.functions.nodeInfo(address).abi["outputs"][0]["components"]]
    stake_wei = int(dict(zip(names, info, strict=True))["stake"])
    return NodeView(
        address=address, card_short_id=card.short_id, status=_status_name(coordinator, address, status),
        qos_score=int(qos),
        stake_wei=stake_wei, earned_wei=earned_wei,
    )  # fmt: skip


async def _endpoints(coordinator: Coordinator) -> Endpoints:
    endpoints, rpc = coordinator.settings.endpoints, coordinator.ops.sender.rpc
    task = coordinator.ops.task.functions
    chain_id, block, audit_rate, audit_pool = await asyncio.gather(
        rpc.call("eth_chainId", []), rpc.call("eth_blockNumber", []),
        task.auditRate().call(), task.auditPool().call(),
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=RELAY_PROBE_TIMEOUT_S) as http:
            is_reachable = (await http.get(f"{endpoints.relay_url.rstrip('/')}/v1/relay")).status_code == 200
    except httpx.HTTPError:
        is_reachable = False
    return Endpoints(
        rpc_url=endpoints.rpc_url, chain_id=int(chain_id, 16), block_number=int(block, 16),
        audit_rate=int(audit_rate), audit_pool_wei=int(audit_pool),
        relay_url=endpoints.relay_url, is_relay_reachable=is_reachable, contracts=dict(endpoints.addresses),
    )  # fmt: skip


def _alerts(
    cards: list[CardView],
    nodes: list[NodeView],
    own: CoordinatorStatus,
    kept_out: list[CardModel],
    machines: Sequence[MachineView] = (),  # the pool's: a lost or drained one is an alert
) -> list[str]:
    """What needs the operator: the same conditions as the Prometheus rules (k8s/monitoring)."""
    alerts = list(own.alerts)
    num_slashed = own.tasks.ended(Outcome.SLASHED)
    if num_slashed:
        alerts.append(f"{num_slashed} task round(s) of the farm's nodes were slashed")
    alerts += [f"card model {card.short_id} kept out by the reference check" for card in kept_out]
    alerts += [f"worker {w.worker_id} is down" for card in cards for w in card.workers if not w.is_alive]
    quit_nodes = [node.address for node in nodes if node.status == NodeStatus.QUIT.name.lower()]
    if quit_nodes:
        alerts.append(
            f"{len(quit_nodes)} node(s) out of the network (quit, kicked out or slashed): {quit_nodes}"
        )
    return alerts + machine_alerts(machines)
