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


class Endpoints(_View):
    rpc_url: str
    chain_id: int | None = None
    block_number: int | None = None
    relay_url: str
    is_relay_reachable: bool
    contracts: dict[str, str]


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
    ledger: LedgerTotals = LedgerTotals()

    @property
    def earned_cnx(self) -> float:
        return self.earned_wei / WEI_PER_CNX

    @property
    def workers(self) -> list[WorkerView]:
        return [worker for card in self.cards for worker in card.workers]
