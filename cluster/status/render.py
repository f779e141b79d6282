"""The farm for people: ``python -m cluster status`` (per card model and worker, per node account, alerts)
and the line the running farm prints every few seconds. Both count task rounds the same way."""

from __future__ import annotations

import time

from cluster.coordinator.round_state import Sampling, TaskCounts
from cluster.ledger.report import render_totals
from cluster.status.machines import count_by_state, short_node_id
from cluster.status.model import (
    WEI_PER_CNX,
    CoordinatorStatus,
    FarmStatus,
    FundsView,
    MachineView,
    PayoutReport,
    WorkerView,
)

GIB = 1024**3


def _bytes(num_bytes: int | None) -> str:
    return (
        "-"
        if num_bytes is None
        else f"{num_bytes / GIB:.2f} GiB"
        if num_bytes >= GIB / 10
        else f"{num_bytes / 2**20:.1f} MiB"
    )


def _worker_line(worker: WorkerView) -> str:
    state = "down" if not worker.is_alive else f"busy x{worker.num_running}" if worker.is_busy else "idle"
    warm = ", ".join(worker.warm_models) or "none"
    return (
        f"    {worker.worker_id:<28} {state:<8} jobs {worker.num_jobs:<5} "
        f"vram {_bytes(worker.vram_used_bytes):<10} warm: {warm}"
    )


def _age(seconds: float) -> str:
    """A duration as people read it: 45s, 12m, 3h05m, 2d04h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def render_machines(machines: list[MachineView], now: float) -> list[str]:
    """The machines section: a headline with the states that need the operator, then one line each
    (address, short node id, state and for how long, workers alive/total, places, running jobs, GPUs)."""
    if not machines:  # a coordinator that reports none (older, or before its pool has placed workers)
        return []
    counts = count_by_state(machines)
    needs = ", ".join(f"{n} {state}" for state, n in counts.items() if n and state != "serving")
    lines = [
        "",
        f"machines: {len(machines)}" + (f" ({needs})" if needs else ""),
        f"  {'address':<15} {'node':<8} {'state':<8} {'for':>6} {'workers':>7} {'places':>6} "
        f"{'running':>7}  GPUs",
    ]
    for m in machines:
        gpus = ", ".join(f"{card} x{n}" for card, n in sorted(m.gpus.items())) or "none"
        workers = f"{m.num_alive_workers}/{m.num_workers}"
        lines.append(
            f"  {m.address:<15} {short_node_id(m):<8} {m.state:<8} {_age(now - m.since_s):>6} {workers:>7} "
            f"{m.num_places:>6} {m.num_running:>7}  {gpus}"
        )
    return lines


def render_status(status: FarmStatus, now: float | None = None) -> str:
    ep = status.endpoints
    relay = "reachable" if ep.is_relay_reachable else "NOT reachable"
    sampling = ""
    if ep.audit_rate is not None and ep.audit_rate > 1 and ep.audit_pool_wei is not None:
        sampling = (
            f"; sampled tasks audited 1 in {ep.audit_rate}, audit pool {ep.audit_pool_wei / 10**18:.4f} CNX"
        )
    lines = [
        f"chain  {ep.rpc_url} (chain id {ep.chain_id}, block {ep.block_number}{sampling})",
        f"relay  {ep.relay_url} ({relay})",
        "",
        "card models and GPU workers:",
    ]
    for card in status.cards:
        paused = "  PAUSED by the guard" if card.is_paused else ""
        lines.append(f"  {card.short_id} {card.gpu_name} ({card.vram_gb} GB, {card.runtime}){paused}")
        if card.check:
            lines.append(f"    check: {card.check}")
        lines += [_worker_line(worker) for worker in card.workers]
    lines += [
        "",
        "node accounts:",
        f"  {'address':<42} {'card':<8} {'status':<13} {'QoS':>5} {'stake CNX':>10} {'earned CNX':>11}",
    ]
    for node in status.nodes:
        lines.append(
            f"  {node.address:<42} {node.card_short_id:<8} {node.status:<13} {node.qos_score:>5} "
            f"{node.stake_wei / WEI_PER_CNX:>10.2f} {node.earned_wei / WEI_PER_CNX:>11.4f}"
        )
    lines += render_machines(status.machines, time.time() if now is None else now)
    lines += ["", f"{render_task_counts(status.tasks)}; earned {status.earned_cnx:.4f} CNX"]
    lines.append(render_totals(status.ledger))
    if status.funds is not None:
        lines += render_funds(status.funds)
    lines += ["alerts:"] + [f"  ! {alert}" for alert in status.alerts] if status.alerts else ["alerts: none"]
    return "\n".join(lines)


def render_funds(funds: FundsView) -> list[str]:
    """The operator's money: the account that pays the gas, the reserve, the payout address, retirements."""
    balance = "?" if funds.operator_balance_wei is None else f"{funds.operator_balance_wei / WEI_PER_CNX:.4f}"
    low = "  LOW" if funds.is_operator_low else ""
    payout = funds.payout_address or "none (network.operator.payout_address)"
    last = time.strftime("%Y-%m-%d %H:%M", time.gmtime(funds.last_sweep_s)) if funds.last_sweep_s else "never"
    lines = [
        f"operator account {funds.operator}: {balance} CNX (alert below "
        f"{funds.operator_low_wei / WEI_PER_CNX:.4f}){low}; {funds.num_topups} top-up(s) since start",
        f"gas reserve per node account {funds.gas_reserve_wei / WEI_PER_CNX:.4f} CNX; payout to {payout}, "
        f"last sweep {last}",
    ]
    if funds.retiring:
        phases = ", ".join(f"{phase}={n}" for phase, n in sorted(funds.retiring.items()))
        lines.append(f"retiring node accounts: {phases}")
    return lines


def render_payout(report: PayoutReport) -> str:
    """``python -m cluster payout``: one line per account that had something to sweep, and the total."""
    verb = "would sweep" if report.is_dry_run else "swept"
    lines = []
    for line in report.lines:
        if line.error is not None:
            lines.append(f"  {line.node}  FAILED: {line.error}")
        elif line.amount_wei > 0:
            credit = f" (credits {line.withdrawn_wei / WEI_PER_CNX:.6f} CNX)" if line.withdrawn_wei else ""
            tx = f" tx {line.tx_hash}" if line.tx_hash else ""
            lines.append(f"  {line.node}  {line.amount_wei / WEI_PER_CNX:.6f} CNX{credit}{tx}")
    num_swept = sum(line.amount_wei > 0 for line in report.lines)
    lines.append(
        f"{verb} {report.total_wei / WEI_PER_CNX:.6f} CNX from {num_swept} of {len(report.lines)} node "
        f"account(s) to {report.payout_address}; {len(report.errors)} failed"
    )
    return "\n".join(lines)


def render_task_counts(counts: TaskCounts) -> str:
    steps = ", ".join(f"{step}={n}" for step, n in sorted(counts.by_step.items())) or "none"
    outcomes = ", ".join(f"{outcome}={n}" for outcome, n in sorted(counts.by_outcome.items())) or "none"
    line = f"task rounds: {steps}; outcomes: {outcomes}"
    if counts.by_failure:
        line += "; failed: " + ", ".join(f"{code}={n}" for code, n in sorted(counts.by_failure.items()))
    if counts.by_sampling:
        line += "; sampled: " + ", ".join(f"{kind}={counts.sampled(kind)}" for kind in Sampling)
    return line


def render_summary(status: CoordinatorStatus) -> str:
    """The running farm in a few lines: what ``python -m cluster`` prints while it serves."""
    lines = [
        f"[cluster] {time.strftime('%H:%M:%S')} nodes={len(status.nodes)} earned={status.earned_cnx:.4f} CNX",
        f"          {render_task_counts(status.tasks)}",
    ]
    lines += [f"          check: {message}" for message in status.reference_checks.values()]
    lines += [f"          {alert}" for alert in status.alerts]
    return "\n".join(lines)
