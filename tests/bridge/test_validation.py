"""The bridge's validation choice (issue 28) reaching the chain: a native task and an OpenAI-shaped chat
task asked as sampled are created with createTaskWithValidation at the sampled price; without a choice
the bridge's default (Full) holds; a sampled fee above the network's bound is a 400 before anything is
paid. Nodes are the contracts harness's (nothing runs the tasks here): the test reads what was created.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cluster.chain.contracts import TaskType
from network.app import AuditTerms, PricePolicy
from network.bridge import ApiKey, BridgeConfig, ModelSpec, RunningBridge, create_bridge
from tests.app.conftest import app, nodes, relay  # noqa: F401  (the app fixture books the wallet's gas)
from tests.app.nodes import GPT_ARGS
from tests.contracts.conftest import net  # noqa: F401
from tests.contracts.net import ETHER, Net

N = 10
KEY = "sk-validation-test"


@pytest.fixture
def sampled_bridge(net: Net, nodes, relay, app, anvil, deployment, tmp_path) -> Iterator[str]:  # noqa: F811
    nodes.join()
    net.set_audit_rate(N)
    deployment_file = tmp_path / "deployment.json"
    deployment.save(deployment_file)
    config = BridgeConfig(
        rpc_url=anvil.rpc_url, relay_url=relay.url, deployment_file=deployment_file, data_dir=tmp_path / "b",
        poll_interval_s=0.1, max_fee_wei=100 * ETHER,
        models=[ModelSpec(id="chat", path="no-such-model", task_type="gpt")],
        api_keys=[ApiKey(key=KEY, rate_per_s=100, burst=100)],
    )  # fmt: skip
    with RunningBridge(create_bridge(config, account=app)) as running:
        yield running.url


def created(
    http: httpx.Client, harness: Net, body: dict[str, Any], path: str = "/v1/tasks"
) -> tuple[dict, dict]:
    """POST the task, wait until its chain task exists; (the bridge's view, the chain's events by name)."""
    view = http.post(path, json=body).raise_for_status().json()
    deadline = time.monotonic() + 60
    while view["task_id"] is None:
        assert time.monotonic() < deadline, view
        time.sleep(0.05)  # polling the bridge's state until it says the task was created
        view = http.get(f"/v1/tasks/{view['id']}").raise_for_status().json()
    events: dict[str, list[dict]] = {}
    for name in ("TaskPending", "TaskSampled", "TaskStarted"):
        logs = getattr(harness.task.events, name)().get_logs(
            from_block=0, argument_filters={"taskId": view["task_id"]}
        )
        events[name] = [dict(log["args"]) for log in logs]
    return view, events


def test_the_validation_chosen_reaches_the_chain_at_its_price(sampled_bridge, net: Net):  # noqa: F811
    terms = AuditTerms(N, net.view(net.task, "AUDIT_MARGIN_BPS"), net.node_stake())
    full_fee = PricePolicy().fee_for(net.view(net.queue, "estimatedMs", int(TaskType.GPT), 256))
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sampled_bridge, headers=headers, timeout=60) as http:
        native, events = created(
            http, net, {"task_type": "gpt", "task_args": GPT_ARGS, "validation": "sampled"}
        )
        assert native["validation"] == "sampled" and int(native["fee_wei"]) == terms.sampled_fee_for_full(
            full_fee
        )
        assert events["TaskSampled"] == [
            {"taskId": native["task_id"], "auditRate": N, "resultAfterAudit": False}
        ]
        assert [e["round"] for e in events["TaskStarted"]] == [0]

        chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256,
                "validation": "sampled_result_after_audit"}  # fmt: skip
        view, events = created(http, net, chat, "/v1/chat/tasks")
        assert view["validation"] == "sampled_result_after_audit"
        assert [e["resultAfterAudit"] for e in events["TaskSampled"]] == [True]

        default, events = created(http, net, {"task_type": "gpt", "task_args": GPT_ARGS})
        assert default["validation"] == "full" and int(default["fee_wei"]) == full_fee
        # A Full task: no TaskSampled (it queues: the sampled tasks hold two of the three nodes).
        assert events["TaskSampled"] == [] and len(events["TaskPending"]) == 1

        too_high = {"task_type": "gpt", "task_args": GPT_ARGS, "validation": "sampled", "fee_wei": 30 * ETHER}
        refused = http.post("/v1/tasks", json=too_high)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "sampled_fee_too_high"
        assert "Full validation" in refused.json()["error"]["message"]
