"""A relay on a PostgreSQL a few milliseconds away, through a real TCP hop that adds the delay: its
downloads are served while another download's query waits on the database (the first release read the
database inside the event loop, so one slow query held every request of the replica)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cluster.protocol.hashes import task_hash
from cluster.protocol.signing import bound_params, sign_request
from network.relay.files import FileStore
from network.relay.process import RelayProcess
from network.relay.store import RelayStore
from tests.relay.on_chain import ARGS, CREATOR, NODES
from tests.relay.slow_database import SlowDatabaseHop

NUM_TASKS = 5
TASK_READ = b"FROM relay_tasks"  # the SQL text of a download's read, as psycopg sends it


@pytest.fixture
def tasks_with_arguments(postgres_database, tmp_path) -> str:
    """Tasks whose arguments were uploaded, written as the follower and an upload would (directly)."""
    store, files = RelayStore(postgres_database), FileStore(tmp_path / "files")
    try:
        for task_id in range(NUM_TASKS):
            store.saw_task(task_id, 1, CREATOR.address, task_hash(ARGS))
            store.saw_selection(task_id, 0, NODES[0].address)
            files.write_args(task_id, ARGS.encode())
            store.mark_args_uploaded(task_id)
    finally:
        store.close()
    return postgres_database


def download(url: str, task_id: int) -> httpx.Response:
    """The creator's signed download of the task's arguments."""
    params = bound_params("GET", f"/v1/inference_tasks/{task_id}", {"task_id": task_id})
    timestamp, signature = sign_request(params, CREATOR.key)
    query = {"timestamp": timestamp, "signature": signature}
    return httpx.get(f"{url}/v1/inference_tasks/{task_id}", params=query, timeout=120)


def test_downloads_are_served_while_another_downloads_query_waits(
    anvil, postgres, tasks_with_arguments, tmp_path
):
    with SlowDatabaseHop(postgres.port, delay_s=0.005) as hop, RelayProcess(
        rpc_url=anvil.rpc_url, task_address="0x" + "11" * 20, data_dir=tmp_path,
        database_url=hop.url_of(tasks_with_arguments), poll_interval_s=600,
    ) as relay, ThreadPoolExecutor(NUM_TASKS) as pool:  # fmt: skip
        hop.hold_next(TASK_READ)
        waiting = pool.submit(download, relay.url, 0)
        assert hop.held.wait(60), "the first download's query never reached the database"
        others = [pool.submit(download, relay.url, task_id) for task_id in range(1, NUM_TASKS)]
        try:
            # served while the first query waits (the first release's loop was stuck in that read)
            answered = [other.result(timeout=60) for other in others]
            assert not waiting.done()
        finally:
            hop.release()
        assert [r.status_code for r in answered] == [200] * (NUM_TASKS - 1)
        assert [r.json()["data"]["task_args"] for r in answered] == [ARGS] * (NUM_TASKS - 1)
        assert waiting.result(timeout=60).json()["data"]["task_args"] == ARGS
