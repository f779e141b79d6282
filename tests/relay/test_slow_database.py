"""A relay on a PostgreSQL a few milliseconds away, through a real TCP hop that adds the delay: its
downloads are served while another download's query waits on the database (the first release read the
database inside the event loop, so one slow query held every request of the replica). And a database
that drops the relay's connections (a restart) costs no request."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
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


def drop_connections(postgres, database: str) -> int:
    """What a restart does to the relay's connections: PostgreSQL ends every session on the database."""
    admin = f"postgresql://postgres@127.0.0.1:{postgres.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
        )
        return len(ended.fetchall())


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


def test_a_download_after_the_database_dropped_every_connection_is_answered(
    anvil, postgres, tasks_with_arguments, tmp_path
):
    """The async reads keep no pre-ping (a round trip per request): a read that meets a dropped connection
    is tried once more on a new one, as a database restart drops them all."""
    database = tasks_with_arguments.rsplit("/", 1)[1]
    with RelayProcess(
        rpc_url=anvil.rpc_url, task_address="0x" + "11" * 20, data_dir=tmp_path,
        database_url=tasks_with_arguments, poll_interval_s=600,
    ) as relay:  # fmt: skip
        assert download(relay.url, 0).status_code == 200  # its pool holds a connection now
        assert drop_connections(postgres, database) > 0
        answered = download(relay.url, 1)
        assert answered.status_code == 200, answered.text
        assert answered.json()["data"]["task_args"] == ARGS
