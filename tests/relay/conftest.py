import pytest

from tests.contracts.conftest import net  # noqa: F401  (books checked after each test)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Every test that takes it runs twice: on SQLite (None: the relay's default file in its data dir)
    and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_database")
