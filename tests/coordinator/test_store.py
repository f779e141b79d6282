"""The coordinator's durable rows: written fields only, paused card models, and an older state directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cluster.coordinator.round_state import NodeTask, Outcome, Step
from cluster.coordinator.store import RoundStore
from cluster.failures import FailureCode

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
    store = RoundStore(tmp_path)
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
    store = RoundStore(tmp_path)
    assert store.pause_card(card, "slots disagree on task 3")
    assert not store.pause_card(card, "a second alert")  # the first reason stays
    store.close()
    store = RoundStore(tmp_path)  # a restarted coordinator
    try:
        assert store.paused_cards() == {card: "slots disagree on task 3"}
        assert store.resume_card(card) and not store.resume_card(card)
        assert store.paused_cards() == {}
    finally:
        store.close()


def test_a_patch_writes_only_its_fields_and_never_reopens_a_done_row(tmp_path: Path) -> None:
    store = RoundStore(tmp_path)
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


def test_counts_are_typed_by_step_outcome_and_failure_code(tmp_path: Path) -> None:
    store = RoundStore(tmp_path)
    try:
        store.add(NodeTask(1, 0, "0xA", 1, b"\x01", Step.SELECTED, 99.0, started_chain_s=9.0))
        store.add(NodeTask(1, 1, "0xB", 1, b"\x01", Step.SELECTED, 99.0, started_chain_s=9.0))
        store.add(NodeTask(2, 0, "0xA", 1, b"\x02", Step.SELECTED, 150.0, started_chain_s=60.0))
        store.patch(1, 0, step=Step.DONE, outcome=Outcome.PAID, fee_earned=10**30)  # past 64 bits
        store.patch(
            1, 1, failure="selected: JobDeadlineExceeded", failure_code=FailureCode.MODEL_NOT_AVAILABLE
        )
        counts = store.counts()
        assert counts.by_step == {Step.DONE: 1, Step.SELECTED: 2} and counts.num_unfinished == 2
        assert counts.ended(Outcome.PAID) == 1 and counts.ended(Outcome.SLASHED) == 0
        assert counts.failed(FailureCode.MODEL_NOT_AVAILABLE) == 1
        assert store.get(1, 1).failure_code is FailureCode.MODEL_NOT_AVAILABLE
        assert store.earnings_wei() == 10**30
        assert store.last_selected_chain_s() == 60.0  # chain time, as the block said: no timeout subtracted
    finally:
        store.close()


def test_a_pending_task_s_cap_is_kept_until_it_is_forgotten(tmp_path: Path) -> None:
    store = RoundStore(tmp_path)
    try:
        store.note_pending(5, 2**64 - 1)  # what a creator may declare: kept whole
        store.note_pending(5, 1)  # a replayed page: the first stays
        assert store.pending_cap(5) == 2**64 - 1 and store.pending_cap(6) is None
        store.add(NodeTask(5, 0, "0xA", 1, b"\x05", Step.SELECTED, 99.0, cap=2**64 - 1))
        assert store.get(5, 0).cap == 2**64 - 1
        store.forget_pending(5)
        assert store.pending_cap(5) is None
    finally:
        store.close()


def test_a_page_of_patches_is_one_transaction_seen_by_another_reader_only_at_its_end(tmp_path: Path) -> None:
    store = RoundStore(tmp_path)
    try:
        for round_ in range(3):
            store.add(NodeTask(5, round_, "0xNode", 1, b"\x01", Step.SELECTED, 99.0))
        other = sqlite3.connect(tmp_path / "tasks.db")  # a second process reading the file
        with store.transaction():
            fresh = store.patched(5, 0, commitments_ready=True)
            assert fresh is not None and fresh.commitments_ready and fresh.step is Step.SELECTED
            store.patch(5, 1, commitments_ready=True)
            assert store.get(5, 1).commitments_ready  # this connection sees its own writes at once
            assert other.execute("SELECT SUM(commitments_ready) FROM node_tasks").fetchone() == (0,)
        assert other.execute("SELECT SUM(commitments_ready) FROM node_tasks").fetchone() == (2,)
        try:  # a page that fails leaves none of its rows changed (its cursor does not move either)
            with store.transaction():
                store.patch(5, 2, step=Step.DONE, outcome=Outcome.PAID)
                raise RuntimeError("an event that does not decode")
        except RuntimeError:
            pass
        assert store.get(5, 2).step is Step.SELECTED
        store.patch(5, 2, step=Step.DONE)
        assert store.patched(5, 2, step=Step.EXECUTED) is None  # a done row is not reopened
        other.close()
    finally:
        store.close()


def test_small_result_files_are_written_with_their_row_and_large_ones_beside_it(tmp_path: Path) -> None:
    store = RoundStore(tmp_path)
    try:
        for round_ in range(3):
            store.add(NodeTask(6, round_, "0xNode", 1, b"\x01", Step.SELECTED, 99.0))
        try:  # the step's write: files, result and nonce together, or none of them
            with store.transaction():
                store.write_files(6, 0, [b"first answer", b""])
                store.patch(6, 0, step=Step.EXECUTED, result=b"\x02", num_files=2)
                raise OSError(28, "No space left on device")
        except OSError:
            pass
        assert store.get(6, 0).step is Step.SELECTED and not store.files_path(6, 0).exists()
        with store.transaction():
            store.write_files(6, 0, [b"first answer", b""])
            store.patch(6, 0, step=Step.EXECUTED, result=b"\x02", num_files=2)
        assert store.read_files(6, 0) == [b"first answer", b""] and not store.files_path(6, 0).exists()
        big = [bytes(200_000), b"\x01" * 100_000]  # over INLINE_FILES_MAX_BYTES: files beside the database
        store.write_files(6, 1, big)
        assert store.read_files(6, 1) == big and store.files_path(6, 1).is_dir()
        store.write_files(6, 1, [b"smaller"])  # a replay replaces what was there
        assert store.read_files(6, 1) == [b"smaller"] and not store.files_path(6, 1).exists()
        store.write_files(6, 0, big)
        assert store.read_files(6, 0) == big
        store.write_files(6, 2, [])
        assert store.read_files(6, 2) == []
    finally:
        store.close()
    store = RoundStore(tmp_path)  # a restarted coordinator reads them back
    try:
        assert store.read_files(6, 1) == [b"smaller"]
    finally:
        store.close()
