#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: set up, lint, format check, then pytest.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/protocol -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
source .venv/bin/activate

echo "[test] ruff check"
ruff check .
echo "[test] ruff format --check"
ruff format --check .

# The relay's tests run on SQLite and on a real PostgreSQL server, which the tests start from Debian's
# binaries (no running service needed). Installed where we may; where they exist, they are required.
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null && [ -z "${HELIUM_POSTGRES_BIN:-}" ] \
  && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[test] installing postgresql (for the relay's PostgreSQL tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "[test] postgresql could not be installed: the PostgreSQL cases will be skipped"
fi
if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || [ -n "${HELIUM_POSTGRES_BIN:-}" ]; then
  export HELIUM_REQUIRE_POSTGRES=1
fi

# One process by default (1,476 s on two cores, 2026-12-07). HELIUM_TEST_WORKERS=2 runs two pytest-xdist
# workers (679 s instead of 906 before tests/farm; the tests that start a Ray cluster stay together on one
# worker, tests/conftest.py),
# but on a loaded machine two workers starve the Ray tests' worker pools past their timeouts.
workers="${HELIUM_TEST_WORKERS:-1}"
parallel=()
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadgroup)
fi

echo "[test] pytest (${workers} worker(s))"
# Exit code 5 means pytest collected no tests: that is a broken suite, never a pass.
set +e
python -m pytest ${parallel[@]+"${parallel[@]}"} "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
