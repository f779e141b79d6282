"""The ledger's store and entries without a chain: each source counts once (a page replayed, a receipt read
again, the store reopened after a crash), the key prefixes say whose money moved, the sums are exact."""

from __future__ import annotations

import csv
import io

from cluster.chain.events import ChainEvent
from cluster.chain.tx_journal import PaidReceipt
from cluster.ledger.entries import day_of, event_entries, receipt_entries
from cluster.ledger.model import OPERATOR_CARD, LedgerAmounts, LedgerKind, LedgerReport
from cluster.ledger.report import render_csv, render_table, render_totals
from cluster.ledger.store import LedgerStore

CNX = 10**18
NODE_A, NODE_B, OPERATOR = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "0" * 39 + "1"
PAYOUT_ADDRESS = "0x" + "9" * 40
DAY_1, DAY_2 = 1_767_225_600, 1_767_225_600 + 86_400  # 2026-01-01 and 2026-01-02, 00:00 UTC


def event(name: str, contract: str, log_index: int, block_time_s: int = DAY_1, **args) -> ChainEvent:
    return ChainEvent(contract, name, args, block_number=10, log_index=log_index, tx_hash="0xAB" + "0" * 62,
                      address="0x" + "5" * 40, block_time_s=block_time_s)  # fmt: skip


def receipt(row: int, key: str, account: str, *, value_wei: int = 0, to: str | None = None,
            status: str = "mined") -> PaidReceipt:  # fmt: skip
    return PaidReceipt(row, f"0x{row:064x}", key, status, account, gas_used=100_000, gas_price_wei=2 * 10**9,
                       block_number=20 + row, to=to, value_wei=value_wei)  # fmt: skip


def open_store(tmp_path) -> LedgerStore:
    store = LedgerStore(tmp_path / "ledger.db")
    cards = {"5f8cc037": "NVIDIA H100 80GB HBM3, 80 GB, vllm", "0badcafe": "RTX 4090, 24 GB, vllm"}
    store.note_accounts({NODE_A: "5f8cc037", NODE_B: "0badcafe", OPERATOR: OPERATOR_CARD}, cards)
    return store


EVENTS = [
    event("TaskNodeSuccess", "Task", 0, taskId=1, node=NODE_A, fee=4 * CNX // 10),
    event("TaskNodeSuccess", "Task", 1, taskId=1, node="0x" + "c" * 40, fee=CNX),  # not the farm's
    event("TaskNodeCompensated", "Task", 2, taskId=2, node=NODE_B, amount=CNX // 10),
    event("NodeSlashed", "Node", 3, block_time_s=DAY_2, node=NODE_B, treasury=OPERATOR, amount=400 * CNX),
    event("NodeStakeRefunded", "Node", 4, block_time_s=DAY_2, node=NODE_A, amount=400 * CNX),
    event("TaskStarted", "Task", 5, taskId=3),  # not money
]
RECEIPTS = [
    receipt(1, f"fund:{NODE_A}:0", OPERATOR, value_wei=401 * CNX, to=NODE_A),
    receipt(2, f"join:{NODE_A}:1", NODE_A, value_wei=400 * CNX, to="0x" + "5" * 40),
    receipt(3, "commit:task=1:round=0", NODE_A),
    receipt(4, f"topup:{NODE_B}:0", OPERATOR, value_wei=CNX // 2, to=NODE_B, status="reverted"),  # gas only
    receipt(5, f"sweep:{NODE_A}:0", NODE_A, value_wei=CNX // 4, to=PAYOUT_ADDRESS),
]
GAS_WEI = 100_000 * 2 * 10**9


def entries():
    found = event_entries(EVENTS, {NODE_A, NODE_B, OPERATOR}.__contains__)
    return found + [e for r in RECEIPTS for e in receipt_entries(r, DAY_1)]


def test_each_source_counts_once_across_replays_and_a_reopened_store(tmp_path):
    store = open_store(tmp_path)
    assert store.add(entries(), receipts_row=5) == 12  # 4 events, 5 gas, 3 values
    first = store.totals()
    assert store.add(entries()) == 0  # the same page and receipts again: a replay after a crash
    store.close()
    reopened = LedgerStore(tmp_path / "ledger.db")  # a restart
    assert reopened.add(entries()) == 0 and reopened.totals() == first and reopened.receipts_row() == 5
    farm = first.farm
    assert (farm.fee_wei, farm.compensation_wei, farm.slashed_wei) == (4 * CNX // 10, CNX // 10, 400 * CNX)
    assert (farm.topup_wei, farm.staked_wei, farm.unstaked_wei, farm.payout_wei) == (
        401 * CNX, 400 * CNX, 400 * CNX, CNX // 4,
    )  # fmt: skip
    assert farm.gas_wei == 5 * GAS_WEI  # the reverted top-up's gas too, its value not
    assert first.by_card[OPERATOR_CARD] == LedgerAmounts(gas_wei=2 * GAS_WEI)
    assert first.by_card["0badcafe"] == LedgerAmounts(compensation_wei=CNX // 10, slashed_wei=400 * CNX)


def test_rows_per_day_card_and_account(tmp_path):
    store = open_store(tmp_path)
    store.add(entries())
    by_card = store.rows()
    assert [(r.day, r.card) for r in by_card] == [
        ("2026-01-01", "0badcafe"), ("2026-01-01", "5f8cc037"), ("2026-01-01", OPERATOR_CARD),
        ("2026-01-02", "0badcafe"), ("2026-01-02", "5f8cc037"),
    ]  # fmt: skip
    a_day_1 = by_card[1].amounts
    assert (a_day_1.fee_wei, a_day_1.topup_wei, a_day_1.payout_wei) == (4 * CNX // 10, 401 * CNX, CNX // 4)
    assert a_day_1.gas_wei == 3 * GAS_WEI and by_card[4].amounts == LedgerAmounts(unstaked_wei=400 * CNX)
    assert [r.day for r in store.rows(since_day="2026-01-02")] == ["2026-01-02"] * 2
    accounts = {(r.day, r.account) for r in store.rows(by_account=True)}
    assert ("2026-01-01", OPERATOR) in accounts and ("2026-01-02", NODE_B) in accounts


def test_the_csv_is_exact_and_the_table_and_totals_read(tmp_path):
    store = open_store(tmp_path)
    store.add(entries())
    report = store.report(by_account=True)
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    node_a = next(r for r in rows if r["account"] == NODE_A and r["day"] == "2026-01-01")
    assert node_a["fee_cnx"] == "0.400000000000000000" and node_a["topup_cnx"] == "401.000000000000000000"
    assert node_a["gpu"] == "NVIDIA H100 80GB HBM3, 80 GB, vllm"
    assert node_a["net_of_gas_cnx"] == "0.399400000000000000"  # 0.4 less three receipts of 0.0002
    assert LedgerReport.model_validate_json(report.model_dump_json()) == report  # crosses Ray, --json
    table = render_table(report)
    assert "card models:" in table and "0badcafe  RTX 4090, 24 GB, vllm" in table
    assert "slashed 400.000000" in render_totals(report.totals)


def test_days_are_utc_dates_of_block_times():
    assert (day_of(DAY_1), day_of(DAY_2 - 1), day_of(DAY_2)) == ("2026-01-01", "2026-01-01", "2026-01-02")
    assert LedgerKind.GAS.value == "gas" and LedgerAmounts(fee_wei=5, gas_wei=7).net_of_gas_wei == -2


def test_the_command_reads_a_stopped_farms_state_directory(tmp_path, capsys):
    from cluster.__main__ import parse_command, run_command

    store = LedgerStore(tmp_path / "coordinator" / "ledger.db")
    store.note_accounts({NODE_A: "5f8cc037", OPERATOR: OPERATOR_CARD}, {"5f8cc037": "H100, 80 GB, vllm"})
    store.add(entries())
    store.close()
    assert run_command(parse_command(["ledger", "--state-dir", str(tmp_path), "--csv"])) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["day"], r["card"], r["account"]) for r in rows][:2] == [
        ("2026-01-01", "5f8cc037", ""), ("2026-01-01", "operator", "")
    ]  # fmt: skip
    assert run_command(parse_command(["ledger", "--state-dir", str(tmp_path), "--accounts"])) == 0
    assert NODE_A in capsys.readouterr().out
    assert run_command(parse_command(["ledger", "--state-dir", str(tmp_path / "elsewhere")])) == 1
