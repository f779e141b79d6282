"""The farm's Prometheus metrics: what the coordinator's status, the chain and the workers say."""

from __future__ import annotations

import urllib.request

from prometheus_client import generate_latest

from cluster.chain.anvil import free_port
from cluster.coordinator.metrics import FarmMetrics
from cluster.coordinator.round_state import Outcome, Sampling, Step, TaskCounts
from cluster.failures import FailureCode
from cluster.ledger.model import LedgerAmounts, LedgerTotals
from cluster.protocol.cards import CardModel
from cluster.status.model import CoordinatorStatus, Endpoints, FarmStatus, MachineView
from cluster.workers.messages import WorkerInfo

STATUS = CoordinatorStatus(
    nodes=["0xA", "0xB"],
    tasks=TaskCounts(
        by_step={Step.SELECTED: 2, Step.DONE: 5},
        by_outcome={Outcome.PAID: 4, Outcome.SLASHED: 1},
        by_failure={FailureCode.MODEL_NOT_AVAILABLE: 2, FailureCode.CONTRACT_REVERT: 1},
        by_sampling={Sampling.SAMPLED: 9, Sampling.AUDITED: 2, Sampling.AUDIT_FAILED: 1},
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
        'helium_sampled_rounds{kind="sampled"} 9.0',
        'helium_sampled_rounds{kind="audit_failed"} 1.0',
        'helium_sampled_rounds{kind="audit_rounds"} 0.0',
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


def machine(node_id: str, address: str, state: str, **given: object) -> MachineView:
    counts = {"num_workers": 4, "num_alive_workers": 4, "num_places": 8, "num_running": 0}
    return MachineView(node_id=node_id + "0" * 48, address=address, state=state,
                       gpus=given.pop("gpus", {"5f8cc037": 4}), since_s=1000.0, **counts | given)  # fmt: skip


def farm_of(machines: list[MachineView]) -> FarmStatus:
    endpoints = Endpoints(
        rpc_url="http://chain", relay_url="http://relay", is_relay_reachable=True, contracts={}
    )
    return FarmStatus(endpoints=endpoints, cards=[], nodes=[], tasks=TaskCounts(), earned_wei=0, alerts=[],
                      machines=machines)  # fmt: skip


def test_metrics_show_each_machine_its_state_and_what_it_gives():
    metrics = FarmMetrics()
    metrics.update_farm(farm_of([
        machine("a1b2c3d4", "10.0.0.5", "serving", num_running=3, gpus={"5f8cc037": 2, "9d0e1f2a": 1}),
        machine("0c0ffee0", "10.0.0.7", "lost", num_alive_workers=0, num_places=6),
        machine("e5f6a7b8", "10.0.0.6", "serving"),
    ]))  # fmt: skip
    text = generate_latest(metrics.registry).decode()
    serving, lost = 'address="10.0.0.5",machine="a1b2c3d4"', 'address="10.0.0.7",machine="0c0ffee0"'
    for line in [
        'helium_machines{state="serving"} 2.0', 'helium_machines{state="lost"} 1.0',
        'helium_machines{state="draining"} 0.0',  # every state is shown, an empty one as 0
        f'helium_machine_state{{{serving},state="serving"}} 1.0',
        f'helium_machine_state{{{serving},state="lost"}} 0.0',
        f'helium_machine_state{{{lost},state="lost"}} 1.0',
        f'helium_machine_state{{{lost},state="serving"}} 0.0',
        f"helium_machine_places{{{lost}}} 6.0", f"helium_machine_places{{{serving}}} 8.0",
        f"helium_machine_workers{{{lost}}} 4.0", f"helium_machine_workers_alive{{{lost}}} 0.0",
        f"helium_machine_workers_alive{{{serving}}} 4.0", f"helium_machine_running_jobs{{{serving}}} 3.0",
        'helium_machine_gpus{address="10.0.0.5",card="5f8cc037",machine="a1b2c3d4"} 2.0',
        'helium_machine_gpus{address="10.0.0.5",card="9d0e1f2a",machine="a1b2c3d4"} 1.0',
    ]:  # fmt: skip
        assert line in text, line


def test_a_machine_gone_from_the_status_leaves_the_metrics():
    metrics = FarmMetrics()
    kept = machine("a1b2c3d4", "10.0.0.5", "serving")
    metrics.update_farm(farm_of([kept, machine("0c0ffee0", "10.0.0.7", "lost")]))
    assert 'machine="0c0ffee0"' in generate_latest(metrics.registry).decode()
    metrics.update_farm(farm_of([kept]))  # taken out of the cluster: no series left to alert on for ever
    text = generate_latest(metrics.registry).decode()
    assert "0c0ffee0" not in text and "10.0.0.7" not in text
    for line in [
        'helium_machines{state="lost"} 0.0',
        'helium_machine_places{address="10.0.0.5",machine="a1b2c3d4"} 8.0',
        'helium_machine_state{address="10.0.0.5",machine="a1b2c3d4",state="serving"} 1.0',
    ]:
        assert line in text, line
