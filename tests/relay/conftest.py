import pytest

from network.relay.process import RelayProcess
from tests.contracts.conftest import net  # noqa: F401  (books checked after each test)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Every test that takes it runs twice: on SQLite (None: the relay's default file in its data dir)
    and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_database")


@pytest.fixture(scope="module")
def relay_process(anvil, tmp_path_factory):
    """A relay in its own process (a crash is observed, not suffered), following no contract: for the
    tests of what requests do to it."""
    with RelayProcess(
        rpc_url=anvil.rpc_url, task_address="0x" + "11" * 20, data_dir=tmp_path_factory.mktemp("relay")
    ) as running:
        yield running
