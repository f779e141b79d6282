"""The farm status as people and scripts read it: the text view, the JSON, the metrics it feeds."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from cluster.coordinator.metrics import FarmMetrics
from cluster.coordinator.round_state import Outcome, Step, TaskCounts
from cluster.failures import FailureCode
from cluster.status.model import CardView, Endpoints, FarmStatus, NodeView, WorkerView
from cluster.status.render import render_status

CNX = 10**18


def farm() -> FarmStatus:
    workers = [
        WorkerView(worker_id="helium-worker-5f8cc037-0", is_alive=True, num_running=1, num_jobs=7,
                   warm_models=["/models/tiny-chat"], vram_used_bytes=3 * 2**30),
        WorkerView(worker_id="helium-worker-5f8cc037-1", is_alive=False, num_running=0, num_jobs=0,
                   warm_models=[]),
    ]  # fmt: skip
    card = CardView(key="0x" + "ab" * 32, short_id="5f8cc037", gpu_name="NVIDIA H100 80GB HBM3",
                    vram_gb=80, runtime="vllm-0.11", check="2 workers agree", is_paused=True,
                    workers=workers)  # fmt: skip
    nodes = [
        NodeView(address="0x" + "1" * 40, card_short_id="5f8cc037", status="busy", qos_score=20,
                 stake_wei=400 * CNX, earned_wei=CNX // 2),
        NodeView(address="0x" + "2" * 40, card_short_id="5f8cc037", status="quit", qos_score=3, stake_wei=0,
                 earned_wei=0),
    ]  # fmt: skip
    endpoints = Endpoints(rpc_url="http://chain:8545", chain_id=42, block_number=7, relay_url="http://relay",
                          is_relay_reachable=False, contracts={"Node": "0x" + "3" * 40})  # fmt: skip
    tasks = TaskCounts(by_step={Step.DONE: 4, Step.COMMITTED: 1}, by_outcome={Outcome.PAID: 4},
                       by_failure={FailureCode.MODEL_NOT_AVAILABLE: 2})  # fmt: skip
    return FarmStatus(endpoints=endpoints, cards=[card], nodes=nodes, tasks=tasks, earned_wei=CNX // 2,
                      alerts=["card model 5f8cc037 paused"], last_selected_chain_s=1000.0)  # fmt: skip


def test_the_text_view_shows_workers_nodes_alerts_and_endpoints():
    text = render_status(farm())
    for shown in [
        "chain  http://chain:8545 (chain id 42, block 7)", "relay  http://relay (NOT reachable)",
        "5f8cc037 NVIDIA H100 80GB HBM3 (80 GB, vllm-0.11)  PAUSED by the guard",
        "helium-worker-5f8cc037-0", "busy x1", "jobs 7", "vram 3.00 GiB", "warm: /models/tiny-chat",
        "helium-worker-5f8cc037-1     down",
        f"{'0x' + '1' * 40} 5f8cc037 busy             20     400.00      0.5000",
        "earned 0.5000 CNX", "! card model 5f8cc037 paused",
        "task rounds: committed=1, done=4; outcomes: paid=4; failed: model_not_available=2",
    ]:  # fmt: skip
        assert shown in text, shown


def test_the_json_round_trips_for_scripts():
    status = farm()
    again = FarmStatus.model_validate(json.loads(status.model_dump_json()))
    assert again == status and again.nodes[0].stake_cnx == 400.0
    assert json.loads(status.model_dump_json())["tasks"]["by_outcome"] == {"paid": 4}  # keyed by name


def test_the_status_feeds_the_alerting_metrics():
    metrics = FarmMetrics()
    metrics.update_farm(farm())
    text = generate_latest(metrics.registry).decode()
    for line in [
        'helium_nodes{status="busy"} 1.0', 'helium_nodes{status="quit"} 1.0',
        'helium_nodes{status="available"} 0.0',
        f'helium_node_stake_cnx{{node="0x{"1" * 40}"}} 400.0',
        'helium_worker_up{card="NVIDIA H100 80GB HBM3",worker="helium-worker-5f8cc037-1"} 0.0',
        'helium_worker_warm_models{worker="helium-worker-5f8cc037-0"} 1.0',
        'helium_card_model_paused{card="5f8cc037"} 1.0', "helium_last_task_timestamp_seconds 1000.0",
        "helium_relay_up 0.0",
    ]:  # fmt: skip
        assert line in text, line
