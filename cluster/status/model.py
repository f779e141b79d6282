"""What the farm's status is made of: typed, because it crosses Ray and ``status --json`` hands it to scripts.

Amounts are kept in wei (exact integers) with a CNX float beside them for people; every list is sorted
so that two statuses of the same farm print the same.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cluster.coordinator.round_state import TaskCounts
from cluster.ledger.model import LedgerTotals

WEI_PER_CNX = 10**18


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerView(_View):
    worker_id: str
    is_alive: bool
    num_running: int = Field(ge=0)  # jobs running now: busy when above 0
    num_jobs: int = Field(ge=0)  # jobs this worker has run since it started
    warm_models: list[str]  # model ids as tasks name them, warm in the worker's cache
    vram_used_bytes: int | None = None  # NVML on a GPU; the model cache's bytes on a CPU rig
    vram_budget_bytes: int | None = None  # what the model cache may hold

    @property
    def is_busy(self) -> bool:
        return self.num_running > 0


class CardView(_View):
    key: str  # 0x + 64 hex digits, as the nodes joined with
    short_id: str
    gpu_name: str
    vram_gb: int
    runtime: str
    check: str  # the reference check's message ("" when none ran)
    is_paused: bool  # paused by the consensus guard
    workers: list[WorkerView]


class NodeView(_View):
    address: str
    card_short_id: str
    status: str  # the Node contract's status, lower case: available, busy, paused, quit, ...
    qos_score: int
    stake_wei: int
    earned_wei: int

    @property
    def stake_cnx(self) -> float:
        return self.stake_wei / WEI_PER_CNX


class MachineView(_View):
    """One Ray node of the farm that holds GPU workers (a machine): what it gives and what state it is in.

    States: ``serving`` (its places count in the farm's capacity), ``draining`` (its accounts paused, its
    running jobs finishing), ``drained`` (its workers stopped: safe to remove), ``lost`` (Ray found it dead;
    its places no longer count).
    """

    node_id: str  # the Ray node id (hex); a restarted raylet is a new machine
    address: str  # the node's IP address as Ray knows it (NodeManagerAddress)
    state: str  # serving | draining | drained | lost
    gpus: dict[str, int]  # card model short id -> GPUs of it on this machine
    num_workers: int = Field(ge=0)
    num_alive_workers: int = Field(ge=0)
    num_places: int = Field(ge=0)  # task places its workers give
    num_running: int = Field(ge=0)  # jobs running on it now
    since_s: float  # Unix time it entered its state

    @property
    def is_safe_to_remove(self) -> bool:
        return self.state in ("drained", "lost")


class Endpoints(_View):
    rpc_url: str
    chain_id: int | None = None
    block_number: int | None = None
    audit_rate: int | None = None  # Task.auditRate(): 1 in N sampled tasks audited (1: every task on three)
    audit_pool_wei: int | None = None  # Task.auditPool(): what pays the audits' runs
    relay_url: str
    is_relay_reachable: bool
    contracts: dict[str, str]


class FundsView(_View):
    """The farm's money as the coordinator keeps it (cluster/coordinator/funds): gas, sweeps, retirement."""

    operator: str  # the operator account, which pays the node accounts' top-ups
    operator_balance_wei: int | None
    operator_low_wei: int  # below this the operator account is low (an alert)
    gas_reserve_wei: int  # what each node account keeps for its gas
    num_topups: int = 0  # top-ups mined since the coordinator started
    num_rounds_waiting_for_gas: int = 0  # rounds whose node could not pay its gas: they wait for a top-up
    payout_address: str | None = None
    last_sweep_s: float | None = None  # Unix time of the last scheduled or asked-for sweep
    retiring: dict[str, int] = {}  # node accounts by retirement phase (pausing, draining, ..., retired)

    @property
    def is_operator_low(self) -> bool:
        return self.operator_balance_wei is not None and self.operator_balance_wei < self.operator_low_wei


class SweepLine(_View):
    """One account's sweep: what went (or would go) to the payout address."""

    node: str
    balance_wei: int  # before the sweep (after any withdrawal)
    amount_wei: int  # swept, or to be swept on a dry run; 0: nothing worth its gas above the reserve
    withdrawn_wei: int = 0  # credits pulled out of the contracts first (or to be, on a dry run)
    tx_hash: str | None = None
    error: str | None = None  # this account failed; the others went on


class PayoutReport(_View):
    payout_address: str
    is_dry_run: bool
    lines: list[SweepLine]

    @property
    def total_wei(self) -> int:
        return sum(line.amount_wei for line in self.lines)

    @property
    def errors(self) -> list[SweepLine]:
        return [line for line in self.lines if line.error is not None]


class CoordinatorStatus(_View):
    """What the coordinator knows from its own state, cheaply: the periodic line and the metrics."""

    nodes: list[str]  # the node accounts' addresses
    tasks: TaskCounts
    earned_wei: int
    num_running_rounds: int  # rounds being driven now
    num_rounds_waiting_for_disk: int = 0  # rounds whose results could not be written: the disk is full
    paused_cards: list[str]  # card model keys (hex) the card guard paused
    alerts: list[str]
    reference_checks: dict[str, str] = {}  # card short id -> the reference check's message
    funds: FundsView | None = None  # the operator's money: gas, sweeps, retirement
    ledger: LedgerTotals = LedgerTotals()  # fees, gas, slashes, top-ups, payouts by card (cluster/ledger)

    @property
    def earned_cnx(self) -> float:
        return self.earned_wei / WEI_PER_CNX


class FarmStatus(_View):
    endpoints: Endpoints
    cards: list[CardView]
    nodes: list[NodeView]
    tasks: TaskCounts
    earned_wei: int
    alerts: list[str]
    last_selected_chain_s: float | None = None  # the block time a farm node was last selected for a task
    funds: FundsView | None = None
    ledger: LedgerTotals = LedgerTotals()
    machines: list[MachineView] = []  # the Ray nodes with GPU workers, by address

    @property
    def earned_cnx(self) -> float:
        return self.earned_wei / WEI_PER_CNX

    @property
    def workers(self) -> list[WorkerView]:
        return [worker for card in self.cards for worker in card.workers]
