"""Prometheus metrics of the farm, refreshed from the coordinator's status and the workers' info.

Gauges, not counters: every value is read again from durable state (the task store, the chain, the
workers), so a restarted coordinator reports the same numbers instead of starting from zero.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from cluster.chain.contracts import NodeStatus
from cluster.coordinator.round_state import Outcome, Sampling, Step
from cluster.failures import FailureCode
from cluster.ledger.model import WEI_PER_CNX, LedgerKind
from cluster.status.machines import MACHINE_STATES, count_by_state, short_node_id
from cluster.status.model import CoordinatorStatus, FarmStatus, FundsView, MachineView
from cluster.workers.messages import WorkerInfo


class FarmMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks = Gauge(
            "helium_task_rounds", "Task rounds of the farm's nodes, by step", ["step"], registry=r
        )
        self.outcomes = Gauge(
            "helium_task_outcomes", "Finished task rounds, by outcome", ["outcome"], registry=r
        )
        self.queue_depth = Gauge(
            "helium_jobs_waiting", "Task rounds waiting for arguments or a worker", registry=r
        )
        self.earned = Gauge("helium_earned_cnx", "Fees earned by the farm's nodes, in CNX", registry=r)
        self.slashed = Gauge(
            "helium_slashed_rounds", "Task rounds in which a farm node was slashed", registry=r
        )
        self.qos = Gauge("helium_node_qos_score", "QoS score of each node on chain", ["node"], registry=r)
        self.worker_busy = Gauge(
            "helium_worker_busy", "1 while a worker runs a job", ["worker", "card"], registry=r
        )
        self.worker_jobs = Gauge(
            "helium_worker_jobs", "Jobs a worker has run", ["worker", "card"], registry=r
        )
        self.gpu_utilization = Gauge(
            "helium_gpu_utilization_ratio",
            "GPU utilization (NVML; absent on CPU rigs)",
            ["worker"],
            registry=r,
        )
        self.gpu_memory = Gauge(
            "helium_gpu_memory_used_bytes",
            "GPU memory in use (NVML; absent on CPU rigs)",
            ["worker"],
            registry=r,
        )
        self.paused_cards = Gauge("helium_paused_card_models", "Card models paused by the guard", registry=r)
        self.sampling = Gauge(
            "helium_sampled_rounds",
            "Rounds of sampled tasks (issue 28): as their one node (sampled), of those audited and "
            "audit_failed (the first node slashed), and audit_rounds (the audits' other two nodes)",
            ["kind"], registry=r,
        )  # fmt: skip
        # What the farm status adds (cluster.status): node accounts, workers' health, the relay, downloads.
        self.nodes = Gauge(
            "helium_nodes", "The farm's node accounts, by status on chain", ["status"], registry=r
        )
        self.stake = Gauge(
            "helium_node_stake_cnx", "Stake each node holds on chain, in CNX", ["node"], registry=r
        )
        self.worker_up = Gauge(
            "helium_worker_up", "1 while a worker is alive, 0 while the pool brings it back",
            ["worker", "card"], registry=r,
        )  # fmt: skip
        self.warm_models = Gauge(
            "helium_worker_warm_models", "Models warm in a worker's cache", ["worker"], registry=r
        )
        self.vram_used = Gauge(
            "helium_worker_vram_used_bytes", "A worker's GPU memory in use (its model cache on a CPU rig)",
            ["worker"], registry=r,
        )  # fmt: skip
        self.card_paused = Gauge(
            "helium_card_model_paused",
            "1 while the guard keeps a card model's nodes paused",
            ["card"],
            registry=r,
        )
        self.last_task = Gauge(
            "helium_last_task_timestamp_seconds",
            "Chain time a farm node was last selected for a task",
            registry=r,
        )
        self.download_failures = Gauge(
            "helium_model_download_failures", "Task rounds lost because their model could not be downloaded",
            registry=r,
        )  # fmt: skip
        self.failures = Gauge(
            "helium_round_failures", "Task rounds that stopped being driven, by failure code", ["code"],
            registry=r,
        )  # fmt: skip
        self.waiting_for_disk = Gauge(
            "helium_rounds_waiting_for_disk", "Task rounds that cannot write their results: the disk is full",
            registry=r,
        )  # fmt: skip
        self.relay_up = Gauge("helium_relay_up", "1 when the relay answered the last status", registry=r)
        # The ledger (cluster/ledger): what the farm's accounts earned and paid, from receipts and events.
        self.ledger = Gauge(
            "helium_ledger_cnx", "The ledger's totals by card model and kind (fee, gas, slashed, topup, ...)",
            ["card", "kind"], registry=r,
        )  # fmt: skip
        self.net_of_gas = Gauge(
            "helium_earned_net_of_gas_cnx", "Fees and compensations earned less the gas paid, in CNX",
            registry=r,
        )  # fmt: skip
        # The operator's money (cluster/coordinator/funds): the account that pays the nodes' gas.
        self.operator_balance = Gauge(
            "helium_operator_balance_cnx", "The operator account's balance, which tops up the nodes' gas",
            registry=r,
        )  # fmt: skip
        self.operator_low = Gauge(
            "helium_operator_low_balance_cnx", "Below this the operator account is low (network.operator)",
            registry=r,
        )  # fmt: skip
        self.waiting_for_gas = Gauge(
            "helium_rounds_waiting_for_gas", "Task rounds whose node account could not pay its gas",
            registry=r,
        )  # fmt: skip
        self.topups = Gauge(
            "helium_gas_topups", "Top-ups of node accounts mined since the coordinator started", registry=r
        )
        self.retiring = Gauge(
            "helium_node_accounts_retiring", "Node accounts being retired, by phase", ["phase"], registry=r
        )
        # The machines (Ray nodes with GPU workers), named by their node id's first 8 hex digits. A machine
        # that leaves the status leaves these gauges too (_set_machine_series).
        self.machines = Gauge(
            "helium_machines", "The farm's machines by state (serving, draining, drained, lost)", ["state"],
            registry=r,
        )  # fmt: skip
        machine = ["machine", "address"]
        self.machine_state = Gauge(
            "helium_machine_state", "1 for a machine's state, 0 for the others", [*machine, "state"],
            registry=r,
        )  # fmt: skip
        self.machine_places = Gauge(
            "helium_machine_places", "Task places a machine's workers give", machine, registry=r
        )
        self.machine_workers = Gauge("helium_machine_workers", "Workers on a machine", machine, registry=r)
        self.machine_workers_alive = Gauge(
            "helium_machine_workers_alive", "Workers alive on a machine", machine, registry=r
        )
        self.machine_running = Gauge(
            "helium_machine_running_jobs", "Jobs running on a machine now", machine, registry=r
        )
        self.machine_gpus = Gauge(
            "helium_machine_gpus", "GPUs on a machine, by card model", [*machine, "card"], registry=r
        )
        self._machine_series: dict[Gauge, set[tuple[str, ...]]] = {}

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def update(self, status: CoordinatorStatus, qos: dict[str, int], workers: Iterable[WorkerInfo]) -> None:
        counts = status.tasks
        for step in Step:
            self.tasks.labels(step.value).set(counts.at(step))
        for outcome in Outcome:
            if outcome is not Outcome.PENDING:
                self.outcomes.labels(outcome.value).set(counts.ended(outcome))
        for code in FailureCode:
            self.failures.labels(code.value).set(counts.failed(code))
        self.download_failures.set(counts.failed(FailureCode.MODEL_NOT_AVAILABLE))
        self.queue_depth.set(counts.at(Step.SELECTED))
        self.earned.set(status.earned_cnx)
        self.slashed.set(counts.ended(Outcome.SLASHED))
        for kind in Sampling:
            self.sampling.labels(kind.value).set(counts.sampled(kind))
        self.paused_cards.set(len(status.paused_cards))
        self.waiting_for_disk.set(status.num_rounds_waiting_for_disk)
        for card, amounts in status.ledger.by_card.items():
            for kind in LedgerKind:  # every kind, an empty one as 0: the dashboard's sums have series
                self.ledger.labels(card, kind.value).set(amounts[kind] / WEI_PER_CNX)
        self.net_of_gas.set(status.ledger.farm.net_of_gas_wei / WEI_PER_CNX)
        if status.funds is not None:
            self._update_funds(status.funds)
        for node, score in qos.items():
            self.qos.labels(node).set(score)
        for worker in workers:
            labels = (worker.worker_id, worker.card.gpu_name)
            self.worker_busy.labels(*labels).set(1 if worker.is_busy else 0)
            self.worker_jobs.labels(*labels).set(worker.num_jobs)
            if worker.gpu_utilization is not None:
                self.gpu_utilization.labels(worker.worker_id).set(worker.gpu_utilization)
            if worker.gpu_memory_used_bytes is not None:
                self.gpu_memory.labels(worker.worker_id).set(worker.gpu_memory_used_bytes)

    def _update_funds(self, funds: FundsView) -> None:
        if funds.operator_balance_wei is not None:
            self.operator_balance.set(funds.operator_balance_wei / WEI_PER_CNX)
        self.operator_low.set(funds.operator_low_wei / WEI_PER_CNX)
        self.waiting_for_gas.set(funds.num_rounds_waiting_for_gas)
        self.topups.set(funds.num_topups)
        for phase, count in funds.retiring.items():
            self.retiring.labels(phase).set(count)

    def update_farm(self, farm: FarmStatus) -> None:
        by_status = {status.name.lower(): 0 for status in NodeStatus}
        for node in farm.nodes:
            by_status[node.status] = by_status.get(node.status, 0) + 1
            self.stake.labels(node.address).set(node.stake_cnx)
        for status, count in by_status.items():
            self.nodes.labels(status).set(count)
        for card in farm.cards:
            self.card_paused.labels(card.short_id).set(1 if card.is_paused else 0)
            for worker in card.workers:
                self.worker_up.labels(worker.worker_id, card.gpu_name).set(1 if worker.is_alive else 0)
                self.warm_models.labels(worker.worker_id).set(len(worker.warm_models))
                if worker.vram_used_bytes is not None:
                    self.vram_used.labels(worker.worker_id).set(worker.vram_used_bytes)
        if farm.last_selected_chain_s is not None:
            self.last_task.set(farm.last_selected_chain_s)
        self.relay_up.set(1 if farm.endpoints.is_relay_reachable else 0)
        self._update_machines(farm.machines)

    def _update_machines(self, machines: list[MachineView]) -> None:
        for state, count in count_by_state(machines).items():  # every state, an empty one as 0
            self.machines.labels(state).set(count)
        series: dict[Gauge, dict[tuple[str, ...], float]] = {
            gauge: {}
            for gauge in (
                self.machine_state, self.machine_places, self.machine_workers, self.machine_workers_alive,
                self.machine_running, self.machine_gpus,
            )
        }  # fmt: skip
        for m in machines:
            labels = (short_node_id(m), m.address)
            for state in dict.fromkeys([*MACHINE_STATES, m.state]):
                series[self.machine_state][(*labels, state)] = 1 if state == m.state else 0
            series[self.machine_places][labels] = m.num_places
            series[self.machine_workers][labels] = m.num_workers
            series[self.machine_workers_alive][labels] = m.num_alive_workers
            series[self.machine_running][labels] = m.num_running
            for card, num_gpus in m.gpus.items():
                series[self.machine_gpus][(*labels, card)] = num_gpus
        for gauge, values in series.items():
            self._set_machine_series(gauge, values)

    def _set_machine_series(self, gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
        """Set a per-machine gauge's series and drop those of machines no longer in the status (removed
        from the cluster): a gone machine's last values would otherwise be exported, and alerted on,
        for ever."""
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        for labels in self._machine_series.get(gauge, set()) - values.keys():
            gauge.remove(*labels)
        self._machine_series[gauge] = set(values)
