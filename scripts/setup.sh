#!/usr/bin/env bash
# Set up everything the project needs, idempotently: a virtual environment with the Python
# dependencies, and the npm tools of the contracts (solc, anvil). Safe to run again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# Skip the Python installs when nothing they depend on changed since the last successful run.
STAMP="$VENV/.helium-setup-stamp"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup.sh ]; then
  echo "[setup] Python dependencies up to date"
else
"$VENV/bin/python" -m pip install -q --upgrade pip

# Tests and the local network run on the CPU. Without a GPU, pin the CPU build of torch that these
# machines carry; a farm with GPUs gets whatever torch its engines (vLLM) ask for.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e '.[dev]'
touch "$STAMP"
fi

# The contracts' toolchain: solc (compiler) and anvil (local chain), pinned in contracts/package-lock.json.
if [ -f contracts/package-lock.json ]; then
  if [ ! -d contracts/node_modules ] || [ contracts/package-lock.json -nt contracts/node_modules ]; then
    echo "[setup] installing the contracts' npm tools"
    (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
# Debian packages the tests drive, installed where we may (root with apt); elsewhere the tests that need
# them are skipped and say why (with CI set, the Prometheus ones fail instead: tests/outside.py).
# chromium: the chat page's browser test (Playwright's own browser download does not work on these
# machines). prometheus: its server and promtool, for the alert rules and the dashboard's queries.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing ${missing[*]} (for the tests)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
    || echo "[setup] ${missing[*]} could not be installed: the tests that need them will be skipped"
fi
echo "[setup] ready: $VENV"
