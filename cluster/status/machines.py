"""The farm's machines (Ray nodes with GPU workers) for the operator: their states counted, short ids, and
the alerts they raise. Pure: the status's text view, its alerts and the metrics all read them from here."""

from __future__ import annotations

from collections.abc import Iterable

from cluster.status.model import MachineView

MACHINE_STATES = ("serving", "draining", "drained", "lost")  # MachineView.state, in a machine's life order


def short_node_id(machine: MachineView) -> str:
    """The Ray node id's first 8 hex digits: what the status and the metrics name a machine by."""
    return machine.node_id[:8]


def count_by_state(machines: Iterable[MachineView]) -> dict[str, int]:
    """Machines by state, every state shown (an empty one as 0) and an unknown one kept."""
    counts = dict.fromkeys(MACHINE_STATES, 0)
    for machine in machines:
        counts[machine.state] = counts.get(machine.state, 0) + 1
    return counts


def machine_alerts(machines: Iterable[MachineView]) -> list[str]:
    """What the machines need of the operator: a lost machine (its places no longer count) and a drained
    one (its workers stopped: it can be taken out of the cluster)."""
    alerts = []
    for machine in machines:
        name = f"machine {machine.address} ({short_node_id(machine)})"
        if machine.state == "lost":
            alerts.append(f"{name} is lost: its {machine.num_places} place(s) no longer count")
        elif machine.state == "drained":
            alerts.append(f"{name} is drained: safe to remove")
    return alerts
