"""The farm's Prometheus metrics: what the coordinator's status, the chain and the workers say."""

from __future__ import annotations

import urllib.request

from prometheus_client import generate_latest

from cluster.chain.anvil import free_port
from cluster.coordinator.metrics import FarmMetrics
from cluster.coordinator.round_state import Outcome, Step, TaskCounts
from cluster.failures import FailureCode
from cluster.ledger.model import LedgerAmounts, LedgerTotals
from cluster.protocol.cards import CardModel
from cluster.status.model import CoordinatorStatus
from cluster.workers.messages import WorkerInfo

STATUS = CoordinatorStatus(
    nodes=["0xA", "0xB"],
    tasks=TaskCounts(
        by_step={Step.SELECTED: 2, Step.DONE: 5},
        by_outcome={Outcome.PAID: 4, Outcome.SLASHED: 1},
        by_failure={FailureCode.MODEL_NOT_AVAILABLE: 2, FailureCode.CONTRACT_REVERT: 1},
    ),
    earned_wei=1_500_000_000_000_000_000,
    num_running_rounds=2,
    num_rounds_waiting_for_disk=1,
    paused_cards=["ab"],
    alerts=[],
)
WORKERS = [
    WorkerInfo(worker_id="w-0", index=0, card=CardModel("NVIDIA H100 80GB HBM3", 80, "r"), num_running=1,
               num_jobs=7, pid=1, num_torch_threads=1, node_id="n", gpu_utilization=0.75,
               gpu_memory_used_bytes=2e9),
    WorkerInfo(worker_id="w-1", index=1, card=CardModel("Devnet Virtual Card A", 8, "r"), num_running=0,
               num_jobs=3, pid=2, num_torch_threads=1, node_id="n"),
]  # fmt: skip


def test_metrics_reflect_status_chain_and_workers():
    metrics = FarmMetrics()
    metrics.update(STATUS, {"0xA": 20, "0xB": 13}, WORKERS)
    text = generate_latest(metrics.registry).decode()
    for line in [
        'helium_task_rounds{step="selected"} 2.0',
        'helium_task_outcomes{outcome="slashed"} 1.0',
        "helium_jobs_waiting 2.0",
        "helium_earned_cnx 1.5",
        "helium_slashed_rounds 1.0",
        'helium_node_qos_score{node="0xB"} 13.0',
        'helium_worker_busy{card="NVIDIA H100 80GB HBM3",worker="w-0"} 1.0',
        'helium_worker_jobs{card="Devnet Virtual Card A",worker="w-1"} 3.0',
        'helium_gpu_utilization_ratio{worker="w-0"} 0.75',
        "helium_paused_card_models 1.0",
        'helium_round_failures{code="model_not_available"} 2.0',
        'helium_round_failures{code="contract_revert"} 1.0',
        'helium_round_failures{code="internal"} 0.0',
        "helium_model_download_failures 2.0",
        "helium_rounds_waiting_for_disk 1.0",
        'helium_task_rounds{step="committed"} 0.0',  # every step is shown, an empty one as 0
    ]:
        assert line in text, line
    assert 'helium_gpu_utilization_ratio{worker="w-1"}' not in text  # a CPU slot has no GPU to report


def test_metrics_are_served_over_http():
    metrics = FarmMetrics()
    metrics.update(STATUS, {}, [])
    port = free_port()
    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert 'helium_task_outcomes{outcome="paid"} 4.0' in response.read().decode()


def test_metrics_show_the_ledger_with_earnings_net_of_gas():
    card = LedgerAmounts(fee_wei=2 * 10**18, gas_wei=10**18 // 4, slashed_wei=400 * 10**18)
    operator = LedgerAmounts(gas_wei=10**18 // 4)
    ledger = LedgerTotals(farm=card + operator, by_card={"5f8cc037": card, "operator": operator})
    metrics = FarmMetrics()
    metrics.update(STATUS.model_copy(update={"ledger": ledger}), {}, [])
    text = generate_latest(metrics.registry).decode()
    for line in [
        'helium_ledger_cnx{card="5f8cc037",kind="fee"} 2.0',
        'helium_ledger_cnx{card="5f8cc037",kind="slashed"} 400.0',
        'helium_ledger_cnx{card="operator",kind="gas"} 0.25',
        'helium_ledger_cnx{card="operator",kind="payout"} 0.0',  # every kind: the dashboard sums have series
        "helium_earned_net_of_gas_cnx 1.5",
    ]:
        assert line in text, line
