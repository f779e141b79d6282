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
# The chat page's browser test drives Debian's chromium (Playwright's own browser download does not work
# on these machines). Installed where we may; elsewhere that one test is skipped and says why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing chromium (for the chat page test)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[setup] chromium could not be installed: the browser test will be skipped"
fi
echo "[setup] ready: $VENV"
