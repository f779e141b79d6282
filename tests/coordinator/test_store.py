"""The coordinator's durable rows: written fields only, paused card models, and an older state directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cluster.coordinator.store import NodeTask, Step, TaskStore

# tasks.db as the first release wrote it (column `deadline`, an unused `attempts`, no `failure`).
FIRST_RELEASE_SCHEMA = """
CREATE TABLE node_tasks (
    task_id INTEGER NOT NULL, round INTEGER NOT NULL, node TEXT NOT NULL, task_type INTEGER NOT NULL,
    task_hash TEXT NOT NULL, step TEXT NOT NULL, deadline REAL NOT NULL, args_json TEXT, result TEXT,
    nonce TEXT, num_files INTEGER NOT NULL DEFAULT 0, error TEXT,
    commitments_ready INTEGER NOT NULL DEFAULT 0, result_node TEXT, outcome TEXT NOT NULL DEFAULT '',
    fee_earned TEXT NOT NULL DEFAULT '0', attempts INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
    PRIMARY KEY (task_id, round)
);
INSERT INTO node_tasks (task_id, round, node, task_type, task_hash, step, deadline, nonce, updated_at)
VALUES (7, 1, '0xNode', 1, 'aa', 'executed', 1234.5, 'bb', 0);
"""


def test_a_state_directory_of_the_first_release_is_read_after_an_upgrade(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "tasks.db") as db:
        db.executescript(FIRST_RELEASE_SCHEMA)
    store = TaskStore(tmp_path)
    try:
        row = store.get(7, 1)
        assert row is not None and row.step is Step.EXECUTED and row.deadline_chain_s == 1234.5
        assert row.task_hash == b"\xaa" and row.nonce == b"\xbb" and row.failure is None
        assert store.patch(7, 1, failure="commit: ContractRevert") and store.get(7, 1).failure
        assert store.add(NodeTask(8, 0, "0xNode", 1, b"\x01", Step.SELECTED, 99.0))  # new rows fit too
    finally:
        store.close()


def test_paused_card_models_survive_a_reopen_until_resumed(tmp_path: Path) -> None:
    card = bytes(range(32))
    store = TaskStore(tmp_path)
    assert store.pause_card(card, "slots disagree on task 3")
    assert not store.pause_card(card, "a second alert")  # the first reason stays
    store.close()
    store = TaskStore(tmp_path)  # a restarted coordinator
    try:
        assert store.paused_cards() == {card: "slots disagree on task 3"}
        assert store.resume_card(card) and not store.resume_card(card)
        assert store.paused_cards() == {}
    finally:
        store.close()


def test_a_patch_writes_only_its_fields_and_never_reopens_a_done_row(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    try:
        store.add(NodeTask(1, 0, "0xNode", 1, b"\x01", Step.SELECTED, 99.0))
        store.patch(1, 0, commitments_ready=True)  # the chain watch's field
        store.patch(1, 0, step=Step.EXECUTED, result=b"\x02")  # the round driver's
        row = store.get(1, 0)
        assert row.commitments_ready and row.step is Step.EXECUTED and row.result == b"\x02"
        store.patch(1, 0, unless_done=False, step=Step.DONE)
        assert not store.patch(1, 0, step=Step.COMMITTED)  # a late step cannot move it back
        assert store.get(1, 0).step is Step.DONE
    finally:
        store.close()
