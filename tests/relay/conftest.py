from tests.contracts.conftest import net  # noqa: F401  (books checked after each test)
