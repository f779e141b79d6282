"""The relay's store and file store, on SQLite and PostgreSQL: chain facts applied once per page,
network counters, uploads claimed once, atomic files, retention."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from cluster.chain.contracts import NodeStatus
from network.relay.files import INLINE_READ_BYTES, FileStore
from network.relay.schema import Counter, TaskPhase
from network.relay.store import CursorMoved, RelayStore, TaskState

CREATOR = "0x" + "11" * 20
NODE = "0x" + "22" * 20


def url_of(database_url: str | None, tmp_path) -> str:
    return database_url or f"sqlite:///{tmp_path / 'relay.db'}"


@pytest.fixture
def store(database_url, tmp_path):
    store = RelayStore(url_of(database_url, tmp_path))
    yield store
    store.close()


def test_replayed_chain_facts_change_nothing(store):
    for _ in range(2):  # replaying a task's facts (a task started before it was seen) changes nothing
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


def test_the_store_survives_a_reopen_with_its_cursor(database_url, tmp_path):
    url = url_of(database_url, tmp_path)
    first = RelayStore(url)
    with first.chain_page("task-events", 10, 42) as facts:
        facts.saw_task(3, 1, CREATOR, b"\x03" * 32)
        facts.task_phase_changed(TaskPhase.NONE, TaskPhase.QUEUED)
    first.close()
    second = RelayStore(url)  # creating the tables again changes nothing
    assert second.get(3) is not None and second.get_cursor("task-events") == 42
    assert second.counters()[Counter.TASKS_QUEUED] == 1
    second.close()


def test_a_page_is_applied_once_and_a_racing_follower_changes_nothing(store):
    def page(first: int, next_block: int) -> None:
        with store.chain_page("task-events", first, next_block) as facts:
            facts.saw_task(1, 1, CREATOR, b"\x01" * 32)
            facts.task_phase_changed(TaskPhase.NONE, TaskPhase.QUEUED)

    page(5, 9)
    with pytest.raises(CursorMoved):  # the same page again (a second follower, or a replay)
        page(5, 9)
    assert store.counters()[Counter.TASKS_TOTAL] == 1 and store.get_cursor("task-events") == 9

    # Two followers in the same page at once: the second waits on the first's transaction, then finds
    # the cursor moved and writes nothing.
    outcomes: list[str] = []
    inside = threading.Event()

    def racer() -> None:
        inside.wait()
        try:
            page(9, 12)
            outcomes.append("applied")
        except CursorMoved:
            outcomes.append("refused")

    thread = threading.Thread(target=racer)
    thread.start()
    with store.chain_page("task-events", 9, 12) as facts:
        facts.task_phase_changed(TaskPhase.QUEUED, TaskPhase.RUNNING)
        inside.set()
    thread.join(timeout=60)
    assert outcomes == ["refused"]
    counters = store.counters()
    assert (counters[Counter.TASKS_TOTAL], counters[Counter.TASKS_RUNNING]) == (1, 1)
    assert store.get_cursor("task-events") == 12


def test_network_counters_follow_node_statuses_and_task_phases(store):
    with store.chain_facts() as facts:
        for i, node in enumerate((NODE, CREATOR)):
            facts.node_joined(node, "RTX 4090", 24, "cuda", block=3, log_index=i)
            facts.node_status_changed(node, NodeStatus.QUIT, NodeStatus.AVAILABLE, block=3, log_index=i)
        facts.node_status_changed(NODE, NodeStatus.AVAILABLE, NodeStatus.BUSY, block=4, log_index=0)
        facts.node_status_changed(NODE, NodeStatus.BUSY, NodeStatus.PENDING_PAUSE, block=5, log_index=0)
        facts.node_status_changed(CREATOR, NodeStatus.AVAILABLE, NodeStatus.QUIT, block=5, log_index=1)
        facts.node_joined(CREATOR, "A100", 80, "cuda", block=6, log_index=0)  # a rejoin keeps its place
        facts.node_status_changed(CREATOR, NodeStatus.QUIT, NodeStatus.AVAILABLE, block=6, log_index=1)
        for was, now in ((TaskPhase.NONE, TaskPhase.QUEUED), (TaskPhase.QUEUED, TaskPhase.RUNNING),
                         (TaskPhase.NONE, TaskPhase.QUEUED), (TaskPhase.RUNNING, TaskPhase.SUCCEEDED),
                         (TaskPhase.QUEUED, TaskPhase.ABORTED)):  # fmt: skip
            facts.task_phase_changed(was, now)
    # nodes: total, available, busy, paused; tasks: total, queued, running, succeeded, aborted
    assert [store.counters()[c] for c in Counter] == [2, 1, 1, 0, 2, 0, 0, 1, 1]
    total, page = store.nodes_page(0, 10)
    assert total == 2
    assert [(r.address, r.gpu_name, r.status) for r in page] == [
        (NODE, "RTX 4090", NodeStatus.PENDING_PAUSE), (CREATOR, "A100", NodeStatus.AVAILABLE),
    ]  # fmt: skip
    assert [r.address for r in store.nodes_page(1, 10)[1]] == [CREATOR]


def test_results_are_recorded_once(store, tmp_path):
    store.saw_task(4, 1, CREATOR, b"\x04" * 32)
    assert store.mark_results_uploaded(4, 2) is True
    assert store.mark_results_uploaded(4, 2) is False  # a racing upload: nothing changes
    assert store.get(4).num_result_files == 2
    with pytest.raises(KeyError):
        store.mark_results_uploaded(404, 1)
    files = FileStore(tmp_path / "files")
    assert files.write_results(4, [b"first", b"set"]) is True
    assert files.write_results(4, [b"second", b"set"]) is False  # the whole first set is kept
    assert [files.read_result(4, i) for i in (0, 1)] == [b"first", b"set"]


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


def test_requests_read_small_files_in_the_loop_and_large_ones_in_a_thread(tmp_path):
    files = FileStore(tmp_path / "files")
    small, large = b"s" * INLINE_READ_BYTES, os.urandom(INLINE_READ_BYTES + 1)
    files.write_args(7, small)
    files.write_results(7, [small, large])
    loop_thread = threading.get_ident()
    readers: list[int] = []

    def read_bytes(path):  # records which thread reads each file
        readers.append(threading.get_ident())
        return open(path, "rb").read()

    async def read_all() -> list[bytes]:
        return [
            await files.read_args_async(7),
            await files.read_result_async(7, 0),
            await files.read_result_async(7, 1),
        ]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pathlib.Path.read_bytes", read_bytes)
        assert asyncio.run(read_all()) == [small, small, large]
    assert readers[:2] == [loop_thread, loop_thread] and readers[2] != loop_thread


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


def test_retention_deletes_the_files_and_records_of_tasks_ended_long_enough_ago(database_url, tmp_path):
    from network.relay.config import RelayConfig
    from network.relay.service import RelayService

    config = RelayConfig(
        rpc_url="http://127.0.0.1:9", task_address="0x" + "00" * 20, data_dir=tmp_path, retention_s=100,
        database_url=database_url,
    )  # fmt: skip
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
