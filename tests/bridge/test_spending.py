"""What one bridge key can spend: the operator's cap per task, each key's limits per task, per day and in
total, and the wallet, checked with the spend in one step. One key used to spend the wallet: a 500,000 CNX
native fee was paid, and four concurrent requests each asking 40% of the wallet were all accepted, two of
them left retrying createTask forever."""

from __future__ import annotations

import time

import httpx
import pytest

from network.bridge.tasks import BridgeTask, SpendLimits, SpendRefused, TaskStore
from tests.bridge.conftest import KEY, World

NO_LIMITS = SpendLimits("k", None, None, None, day_start=0.0)


def record(n: int, fee: int, key_name: str = "k", created_at: float | None = None) -> BridgeTask:
    now = time.time() if created_at is None else created_at
    return BridgeTask(
        id=f"task_{n}", kind="native", model="m", task_type="gpt", task_args="{}", fee_wei=fee,
        created_at=now, deadline=now + 60, key_name=key_name,
    )  # fmt: skip


def test_requests_that_together_exceed_the_wallet_are_refused_with_402(tmp_path):
    store = TaskStore(tmp_path)
    balance, reserve = 10 * 10**18, 10**16
    outcomes = []
    for n in range(4):  # each asks 40% of the wallet: two fit, beside the reserve
        try:
            store.add_if_affordable(
                record(n, 4 * 10**18), balance_wei=balance, reserve_wei=reserve, limits=NO_LIMITS
            )
            outcomes.append("recorded")
        except SpendRefused as refused:
            outcomes.append(refused.status)
    assert outcomes == ["recorded", "recorded", 402, 402]
    for paid in ("task_0", "task_1"):  # paid on chain: the balance read next shows them spent
        store.update(paid, task_id=7)
    left = balance - 8 * 10**18
    store.add_if_affordable(
        record(9, left - reserve), balance_wei=left, reserve_wei=reserve, limits=NO_LIMITS
    )
    assert store.get("task_2") is None and store.get("task_9") is not None  # refused: nothing recorded
    store.close()


@pytest.mark.parametrize(
    ("limits", "refused_at"),
    [
        (SpendLimits("k", 3 * 10**17, None, None, day_start=0.0), 3),  # the third task asks 4e17
        (SpendLimits("k", None, 5 * 10**17, None, day_start=1000.0), 3),  # yesterday's 2e17 not counted
        (SpendLimits("k", None, None, 6 * 10**17, day_start=0.0), 2),
    ],
)
def test_a_keys_limits_per_task_per_day_and_in_total_are_429s(tmp_path, limits, refused_at):
    store = TaskStore(tmp_path)
    store.add(record(0, 2 * 10**17, created_at=500.0))  # yesterday's spend (before day_start 1000)
    fees = [3 * 10**17, 2 * 10**17, 4 * 10**17]
    refused = None
    for n, fee in enumerate(fees, start=1):
        try:
            store.add_if_affordable(record(n, fee), balance_wei=10**20, reserve_wei=0, limits=limits)
        except SpendRefused as exc:
            refused = n
            assert exc.status == 429 and exc.code == "spending_limit_exceeded" and "'k'" in exc.message
            break
    assert refused == refused_at
    store.close()


def test_a_refund_is_deducted_from_what_a_key_spent(tmp_path):
    store = TaskStore(tmp_path)
    limits = SpendLimits("k", None, None, 5 * 10**17, day_start=0.0)
    store.add_if_affordable(record(1, 4 * 10**17), balance_wei=10**20, reserve_wei=0, limits=limits)
    with pytest.raises(SpendRefused):
        store.add_if_affordable(record(2, 4 * 10**17), balance_wei=10**20, reserve_wei=0, limits=limits)
    store.update("task_1", status="aborted", refund_wei=4 * 10**17)  # cancelled, the fee came back
    store.add_if_affordable(record(3, 4 * 10**17), balance_wei=10**20, reserve_wei=0, limits=limits)
    store.close()


def test_a_fee_above_the_operators_cap_and_a_spent_key_are_refused_in_openais_shape(world: World, tmp_path):
    args = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with (
        world.bridge(tmp_path / "capped", max_fee_wei=10**18) as bridge,
        httpx.Client(base_url=bridge.url, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as http,
    ):
        huge = http.post(
            "/v1/tasks", json={"task_type": "gpt", "task_args": args, "fee_wei": 500_000 * 10**18}
        )
        assert huge.status_code == 400 and huge.json()["error"]["code"] == "fee_above_cap"
        assert http.get("/v1/tasks/none").status_code == 404  # and nothing was recorded or paid
