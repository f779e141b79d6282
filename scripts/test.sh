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

echo "[test] pytest"
# Exit code 5 means pytest collected no tests: that is a broken suite, never a pass.
set +e
python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "[test] pytest collected no tests: failing" >&2
  exit 1
fi
exit "$code"
