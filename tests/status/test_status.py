"""The farm status as people and scripts read it: the text view, the JSON, the metrics it feeds."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from cluster.coordinator.metrics import FarmMetrics
from cluster.coordinator.round_state import Outcome, Sampling, Step, TaskCounts
from cluster.failures import FailureCode
from cluster.status.collect import _alerts
from cluster.status.machines import machine_alerts
from cluster.status.model import (
    CardView,
    CoordinatorStatus,
    Endpoints,
    FarmStatus,
    MachineView,
    NodeView,
    WorkerView,
)
from cluster.status.render import render_status

CNX = 10**18
NOW = 1_800_000_000.0


def machines() -> list[MachineView]:
    """Four machines, one in each state, entered 2h05m, 5m, 45s and 1d01h before NOW."""
    return [
        MachineView(node_id="a1b2c3d4" + "0" * 48, address="10.0.0.5", state="serving", gpus={"5f8cc037": 4},
                    num_workers=4, num_alive_workers=4, num_places=8, num_running=3, since_s=NOW - 7_500),
        MachineView(node_id="e5f6a7b8" + "1" * 48, address="10.0.0.6", state="draining",
                    gpus={"9d0e1f2a": 1, "5f8cc037": 2}, num_workers=3, num_alive_workers=3, num_places=6,
                    num_running=1, since_s=NOW - 300),
        MachineView(node_id="0c0ffee0" + "2" * 48, address="10.0.0.7", state="lost", gpus={"5f8cc037": 4},
                    num_workers=4, num_alive_workers=0, num_places=8, num_running=0, since_s=NOW - 45),
        MachineView(node_id="deadbeef" + "3" * 48, address="10.0.0.8", state="drained", gpus={"9d0e1f2a": 2},
                    num_workers=0, num_alive_workers=0, num_places=0, num_running=0, since_s=NOW - 90_000),
    ]  # fmt: skip


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
    endpoints = Endpoints(rpc_url="http://chain:8545", chain_id=42, block_number=7, audit_rate=10,
                          audit_pool_wei=25 * CNX, relay_url="http://relay",
                          is_relay_reachable=False, contracts={"Node": "0x" + "3" * 40})  # fmt: skip
    tasks = TaskCounts(by_step={Step.DONE: 4, Step.COMMITTED: 1}, by_outcome={Outcome.PAID: 4},
                       by_failure={FailureCode.MODEL_NOT_AVAILABLE: 2},
                       by_sampling={Sampling.SAMPLED: 3, Sampling.AUDITED: 1})  # fmt: skip
    return FarmStatus(endpoints=endpoints, cards=[card], nodes=nodes, tasks=tasks, earned_wei=CNX // 2,
                      alerts=["card model 5f8cc037 paused"], last_selected_chain_s=1000.0,
                      machines=machines())  # fmt: skip


def test_the_text_view_shows_workers_nodes_alerts_and_endpoints():
    text = render_status(farm())
    for shown in [
        "chain  http://chain:8545 (chain id 42, block 7; "
        "sampled tasks audited 1 in 10, audit pool 25.0000 CNX)",
        "relay  http://relay (NOT reachable)",
        "5f8cc037 NVIDIA H100 80GB HBM3 (80 GB, vllm-0.11)  PAUSED by the guard",
        "helium-worker-5f8cc037-0", "busy x1", "jobs 7", "vram 3.00 GiB", "warm: /models/tiny-chat",
        "helium-worker-5f8cc037-1     down",
        f"{'0x' + '1' * 40} 5f8cc037 busy             20     400.00      0.5000",
        "earned 0.5000 CNX", "! card model 5f8cc037 paused",
        "task rounds: committed=1, done=4; outcomes: paid=4; failed: model_not_available=2; "
        "sampled: sampled=3, audited=1, audit_failed=0, audit_rounds=0",
    ]:  # fmt: skip
        assert shown in text, shown


def test_the_json_round_trips_for_scripts():
    status = farm()
    again = FarmStatus.model_validate(json.loads(status.model_dump_json()))
    assert again == status and again.nodes[0].stake_cnx == 400.0
    assert json.loads(status.model_dump_json())["tasks"]["by_outcome"] == {"paid": 4}  # keyed by name
    lost = json.loads(status.model_dump_json())["machines"][2]
    assert lost["node_id"].startswith("0c0ffee0") and lost["state"] == "lost" and lost["num_places"] == 8
    assert lost["gpus"] == {"5f8cc037": 4} and lost["since_s"] == NOW - 45


def test_the_text_view_lists_each_machine_its_state_and_what_it_gives():
    text = render_status(farm(), now=NOW)
    assert "\nmachines: 4 (1 draining, 1 drained, 1 lost)\n" in text  # the states that need the operator
    for shown in [
        "  address         node     state       for workers places running  GPUs",
        "  10.0.0.5        a1b2c3d4 serving   2h05m     4/4      8       3  5f8cc037 x4",
        "  10.0.0.6        e5f6a7b8 draining     5m     3/3      6       1  5f8cc037 x2, 9d0e1f2a x1",
        "  10.0.0.7        0c0ffee0 lost        45s     0/4      8       0  5f8cc037 x4",
        "  10.0.0.8        deadbeef drained   1d01h     0/0      0       0  9d0e1f2a x2",
    ]:  # fmt: skip
        assert shown in text, shown


def test_a_farm_of_serving_machines_says_only_how_many_and_none_shows_no_section():
    serving = [m for m in machines() if m.state == "serving"]
    text = render_status(farm().model_copy(update={"machines": serving}), now=NOW)
    assert "\nmachines: 1\n" in text
    assert "machines" not in render_status(farm().model_copy(update={"machines": []}), now=NOW)


def test_a_lost_machine_and_a_drained_one_are_alerts_in_the_status():
    expected = [
        "machine 10.0.0.7 (0c0ffee0) is lost: its 8 place(s) no longer count",
        "machine 10.0.0.8 (deadbeef) is drained: safe to remove",
    ]
    assert machine_alerts(machines()) == expected  # serving and draining need nothing of the operator
    own = CoordinatorStatus(nodes=[], tasks=TaskCounts(), earned_wei=0, num_running_rounds=0, paused_cards=[],
                            alerts=["the coordinator's own"])  # fmt: skip
    assert _alerts([], [], own, [], machines()) == ["the coordinator's own", *expected]
    assert _alerts([], [], own, []) == ["the coordinator's own"]


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
