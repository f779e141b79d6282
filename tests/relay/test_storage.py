"""The relay's store and file store: idempotent chain facts, atomic files, retention."""

from __future__ import annotations

import os

import pytest

from network.relay.files import FileStore
from network.relay.store import RelayStore, TaskState

CREATOR = "0x" + "11" * 20
NODE = "0x" + "22" * 20


@pytest.fixture
def store(tmp_path):
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    yield store
    store.close()


def test_replayed_chain_facts_change_nothing(store):
    for _ in range(2):  # the event reader delivers at least once: a page may come twice
        store.saw_task(7, 1, CREATOR, b"\x01" * 32)
        store.saw_selection(7, 0, NODE)
        store.saw_success(7, b"r" * 32, NODE, at=100.0)
    task = store.get(7)
    assert task is not None
    assert (task.state, task.selected_nodes, task.result, task.ended_at) == (
        TaskState.SUCCEEDED, {0: NODE}, b"r" * 32, 100.0,
    )  # fmt: skip
    assert task.readers_of_args == {CREATOR, NODE}


def test_an_abort_never_overwrites_a_success_and_unknown_aborts_are_ignored(store):
    store.saw_task(1, 0, CREATOR, b"\x02" * 32)
    store.saw_success(1, b"x" * 8, NODE, at=5.0)
    store.saw_abort(1, "Task Cancelled", at=9.0)
    store.saw_abort(99, "Task fee is too low")  # evicted before the relay saw it
    task = store.get(1)
    assert task is not None and task.state is TaskState.SUCCEEDED and task.ended_at == 5.0
    assert store.get(99) is None


def test_the_store_survives_a_reopen_with_its_cursor(tmp_path):
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    first = RelayStore(url)
    first.saw_task(3, 1, CREATOR, b"\x03" * 32)
    first.set_cursor("task-events", 42)
    first.close()
    second = RelayStore(url)
    assert second.get(3) is not None and second.get_cursor("task-events") == 42
    second.close()


def test_retention_lists_only_tasks_ended_before_the_cutoff(store):
    for task_id, ended in ((1, 10.0), (2, 50.0)):
        store.saw_task(task_id, 1, CREATOR, b"\x00" * 32)
        store.saw_abort(task_id, "Task Cancelled", at=ended)
    store.saw_task(3, 1, CREATOR, b"\x00" * 32)  # still running: never expires
    assert store.ended_before(20.0) == [1]
    assert sorted(store.ended_before(1e12)) == [1, 2]


def test_files_are_written_whole_and_leave_no_temporaries(tmp_path):
    files = FileStore(tmp_path / "files")
    files.write_args(5, b'{"a": 1}')
    files.write_results(5, [b"zero", b"one"])
    assert files.read_args(5) == b'{"a": 1}'
    assert [files.read_result(5, i) for i in (0, 1)] == [b"zero", b"one"]
    leftovers = [n for _, _, names in os.walk(tmp_path) for n in names if n.startswith(".")]
    assert leftovers == []
    files.delete_task(5)
    assert not files.task_dir(5).exists()


def test_a_failed_result_write_leaves_no_partial_results(tmp_path, monkeypatch):
    files = FileStore(tmp_path / "files")
    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file's rename: the process "dies" mid-way
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        files.write_results(6, [b"a", b"b", b"c"])
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (files.task_dir(6) / "results").exists()
    files.write_results(6, [b"a", b"b", b"c"])  # and a retry succeeds
    assert files.read_result(6, 2) == b"c"


def test_retention_deletes_the_files_and_records_of_tasks_ended_long_enough_ago(tmp_path):
    from network.relay.config import RelayConfig
    from network.relay.service import RelayService

    config = RelayConfig(
        rpc_url="http://127.0.0.1:9", task_address="0x" + "00" * 20, data_dir=tmp_path, retention_s=100
    )
    service = RelayService(config)
    try:
        for task_id, ended in ((1, 1_000.0), (2, 1_950.0)):
            service.store.saw_task(task_id, 1, CREATOR, b"\x00" * 32)
            service.files.write_args(task_id, b"{}")
            service.store.saw_abort(task_id, "Task Cancelled", at=ended)
        service.store.saw_task(3, 1, CREATOR, b"\x00" * 32)  # running: kept whatever its age
        service.files.write_args(3, b"{}")

        assert service.sweep_expired(now=2_000.0) == 1
        assert service.store.get(1) is None and not service.files.task_dir(1).exists()
        assert service.store.get(2) is not None and service.files.args_path(2).exists()
        assert service.store.get(3) is not None and service.files.args_path(3).exists()
    finally:
        service.store.close()


def test_a_page_of_chain_facts_is_seen_whole_or_not_at_all(store):
    with store.chain_facts() as facts:
        facts.saw_task(8, 1, CREATOR, b"\x08" * 32)
        facts.saw_selection(8, 0, NODE)
        facts.saw_selection(99, 0, NODE)  # a task never seen: skipped, the page goes on
        assert store.get(8) is None  # another reader sees nothing of the page yet
        facts.saw_selection(8, 1, CREATOR)
    task = store.get(8)
    assert task is not None and task.selected_nodes == {0: NODE, 1: CREATOR}
