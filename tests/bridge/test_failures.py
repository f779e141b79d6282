"""A bridge task that cannot be seen through: which records may still hold a fee on chain, and what the
sweep and the worker do with a record past the bridge's deadline that has no task id (ended failed when
no createTask was ever signed for it; its task found and cancelled for the refund when one was)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from cluster.chain.tx_chain import TxChain
from network.app import ApplicationClient
from network.bridge import ApiKey, BridgeConfig, ModelSpec, RunningBridge, create_bridge
from network.bridge.tasks import BridgeTask, TaskStore
from tests.chain.rpc_proxy import FaultyRpcProxy
from tests.relay.on_chain import eventually

KEY = "sk-bridge-failures"
FEE_WEI = 10**17
SD_ARGS = {"base_model": "tiny-sd", "prompt": "a picture", "task_config": {"steps": 2, "num_images": 1}}


def test_a_failed_task_is_swept_once_for_a_fee_the_chain_may_hold(tmp_path: Path):
    store = TaskStore(tmp_path)
    try:
        now = time.time()
        rows = [("failed", 7), ("failed", None), ("running", 8), ("aborted", 9)]
        for n, (status, task_id) in enumerate(rows):
            store.add(
                BridgeTask(id=f"task_{n}", kind="native", model="m", task_type="gpt", task_args="{}",
                           created_at=now, deadline=now)
            )  # fmt: skip
            store.update(f"task_{n}", status=status, task_id=task_id)
        # failed with no task id recorded: its request may have created one all the same
        assert {r.id for r in store.to_sweep()} == {"task_0", "task_1", "task_2"}
        assert {r.id for r in store.unfinished()} == {"task_2"}  # a failed task is not driven again
        store.update("task_0", swept=True)  # cancelled, or found ended on chain
        store.update("task_1", swept=True)  # its request created no task: nothing held
        assert {r.id for r in store.to_sweep()} == {"task_2"}
    finally:
        store.close()


@contextlib.contextmanager
def bridge_paying_from(
    wallet: LocalAccount, rpc_url: str, deployment, tmp_path: Path
) -> Iterator[httpx.Client]:
    """A bridge on ``rpc_url`` whose tasks are overdue a second after they are asked for (its relay is
    never reached here)."""
    deployment.save(tmp_path / "deployment.json")
    config = BridgeConfig(
        rpc_url=rpc_url, relay_url="http://127.0.0.1:9", deployment_file=tmp_path / "deployment.json",
        data_dir=tmp_path / "bridge", poll_interval_s=0.1, sweep_interval_s=0.2, task_timeout_s=1.0,
        models=[ModelSpec(id="sd", path="tiny-sd", task_type="sd")],
        api_keys=[ApiKey(key=KEY, name="tests", rate_per_s=100, burst=100)],
    )  # fmt: skip
    with RunningBridge(create_bridge(config, account=wallet)) as running:
        yield httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def funded_wallet(w3) -> LocalAccount:
    wallet = Account.create()
    sent = w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": wallet.address, "value": 10**19})
    w3.eth.wait_for_transaction_receipt(sent)
    return wallet


def join_paused_80gb_nodes(w3, deployment) -> None:
    """Three nodes that could run a 64 GB task, paused: such a task is taken and stays queued."""
    node = deployment.bind(w3).contract("Node")
    stake = node.functions.nodeStake().call()
    for account in w3.eth.accounts[27:30]:
        sent = node.functions.join("Paused 80 GB card", 80, "test").transact(
            {"from": account, "value": stake}
        )
        w3.eth.wait_for_transaction_receipt(sent)
        w3.eth.wait_for_transaction_receipt(node.functions.pause().transact({"from": account}))


def ask_for_a_task(http: httpx.Client, vram_limit: int = 0) -> str:
    body = {"task_type": "sd", "task_args": SD_ARGS, "fee_wei": FEE_WEI, "vram_limit": vram_limit}
    created = http.post("/v1/tasks", json=body)
    assert created.status_code == 202, created.text
    return created.json()["id"]


def view_when(http: httpx.Client, record_id: str, until) -> dict:
    def matching() -> dict | None:
        view = http.get(f"/v1/tasks/{record_id}").raise_for_status().json()
        return view if until(view) else None

    return eventually(matching)


def test_a_task_the_chain_never_took_ends_failed_past_its_deadline_and_is_never_paid(
    w3, anvil, deployment, tmp_path
):
    """Every gas estimate is refused (503) past the deadline, so no createTask is ever signed. The record
    ends failed (it stayed queued, its worker retrying, for ever) and its request is retired, so a bridge
    restarted on a chain that answers again does not create the task its caller was told failed."""
    wallet = funded_wallet(w3)
    with FaultyRpcProxy(anvil.rpc_url) as rpc:
        rpc.fail_next(10**9, "eth_estimateGas")
        with bridge_paying_from(wallet, rpc.url, deployment, tmp_path) as http:
            record_id = ask_for_a_task(http)
            view = view_when(http, record_id, lambda v: v["status"] != "queued")
        assert view["status"] == "failed" and view["task_id"] is None, view
        assert view["reason"] == "no chain task was created before the bridge's deadline; nothing was paid"
        assert rpc.calls["eth_estimateGas"] > 0  # the worker did try
        rpc.fail_next(0, "eth_estimateGas")
        with bridge_paying_from(wallet, rpc.url, deployment, tmp_path) as http:  # resumes what is pending
            assert http.get(f"/v1/tasks/{record_id}").json()["status"] == "failed"
    assert w3.eth.get_transaction_count(wallet.address) == 0


def test_a_task_that_failed_before_its_id_was_recorded_is_found_and_cancelled_for_its_refund(
    w3, anvil, deployment, tmp_path, monkeypatch
):
    """createTask is mined, then the worker fails for good before it records the task id (a bug in the
    upload, injected). The sweep finds the task through the request's idempotency key and cancels it, and
    the fee comes back (the first release never swept such a record: the fee stayed on chain)."""

    async def broken_upload(self: ApplicationClient, record: object) -> None:
        raise RuntimeError("injected: the argument upload broke")

    monkeypatch.setattr(ApplicationClient, "_upload_args", broken_upload)
    wallet = funded_wallet(w3)
    join_paused_80gb_nodes(w3, deployment)
    with bridge_paying_from(wallet, anvil.rpc_url, deployment, tmp_path) as http:
        record_id = ask_for_a_task(http, vram_limit=64)
        view = view_when(http, record_id, lambda v: v["status"] not in ("queued", "failed"))
    assert view["status"] == "aborted" and view["task_id"] is not None, view
    assert view["reason"] == "Task Cancelled (after: RuntimeError: injected: the argument upload broke)"
    # the fee back (wei as a string in the API), less the queue's rent for its seconds in the queue
    assert 0 <= FEE_WEI - int(view["refund_wei"]) < FEE_WEI // 1000


def test_a_task_that_failed_before_paying_is_swept_with_its_reason_kept(
    w3, anvil, deployment, tmp_path, monkeypatch
):
    """createTask's estimate meets a bug (injected): the record fails for good before anything is signed.
    Past its deadline the sweep finds no chain task behind it and marks it swept, keeping its reason."""

    async def broken_estimate(self: object, *args: object) -> int:
        raise RuntimeError("injected: the estimate broke")

    monkeypatch.setattr(TxChain, "estimate_gas", broken_estimate)
    wallet = funded_wallet(w3)
    with bridge_paying_from(wallet, anvil.rpc_url, deployment, tmp_path) as http:
        record_id = ask_for_a_task(http)
        view = view_when(http, record_id, lambda v: v["status"] == "failed")
        store = TaskStore(tmp_path / "bridge")  # the bridge's own records, read beside it
        try:
            eventually(lambda: store.get(record_id).swept)
        finally:
            store.close()
        assert http.get(f"/v1/tasks/{record_id}").json()["reason"] == view["reason"]
    assert view["reason"] == "RuntimeError: injected: the estimate broke" and view["task_id"] is None
    assert w3.eth.get_transaction_count(wallet.address) == 0
