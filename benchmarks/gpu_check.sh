#!/usr/bin/env bash
# The one-command GPU check (issue 13): the engines' determinism in fp16 and bf16 on CUDA, the replicas
# mode with 1, 2 and 4 replicas on one GPU, and engine_throughput on Qwen2.5-0.5B and 1.5B shapes, with
# every task's bytes checked. Writes markdown to $OUT (the device tool's folder) or /tmp/gpu_check.
#
# The device image has torch, transformers and pytest but not diffusers, pydantic, omegaconf or the eth
# libraries, and no network: the wheels travel with the call (/work/.library/device/README.md).
#
#   here, once (network):  bash benchmarks/gpu_check.sh --fetch-wheels     # fills .whl/ (git-ignored)
#   on the device:         run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
#   here, to try the script itself on the CPU (tiny shapes, no wheels):
#                          bash benchmarks/gpu_check.sh --dry-run-cpu
#
# Budget on an H100/H200: the steps' timeouts add up to 450 s (7.5 minutes), the wheels' install ~15 s;
# a step past its timeout is reported FAIL and the next one runs. Then copy
# $OUT/*.md into benchmarks/results/ (gpu_check_<gpu>.md) and commit them.
set -uo pipefail
cd "$(dirname "$0")/.."

# What the device image lacks (KINDS.md lists what it has), in this checkout's versions.
WHEELS=(
  annotated-types antlr4-python3-runtime bitarray cffi ckzg cytoolz diffusers eth-abi eth-account eth-hash
  eth-keyfile eth-keys eth-rlp eth-typing eth-utils hexbytes omegaconf parsimonious py-ecc pycparser
  pycryptodome pydantic pydantic-core rlp typing-inspection
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p .whl
  for name in "${WHEELS[@]}"; do
    version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))") || exit 1
    platform_args=()
    for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
    # Binary wheels for the device's Python 3.12; a pure-Python sdist (antlr4) is built into a wheel here.
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platform_args[@]}" -d .whl "$name==$version" \
      || .venv/bin/python -m pip wheel -q --no-deps -w .whl "$name==$version" \
      || { echo "could not fetch $name==$version"; exit 1; }
  done
  du -sh .whl
  exit 0
fi

DRY_RUN=0
[[ "${1:-}" == "--dry-run-cpu" ]] && DRY_RUN=1
OUT_DIR="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/gpu_check.md"
PY=python3
DETERMINISM_LIMIT_S=75
if [[ $DRY_RUN == 1 ]]; then
  PY=.venv/bin/python
  DEVICE=cpu
  DETERMINISM_LIMIT_S=300  # two shared CPU cores, not an H100
else
  DEVICE=cuda
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/: run --fetch-wheels here and carry .whl"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH="/tmp/site:$PWD"
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, transformers, diffusers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| diffusers', diffusers.__version__)"
  echo '```'
} >"$REPORT"

FAILED=0
step() {  # step NAME TIMEOUT_S COMMAND...: runs it, appends PASS/FAIL and the output's tail to the report
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  local log="$OUT_DIR/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log"
  local started=$SECONDS
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local verdict=PASS
  [[ $rc == 0 ]] || { verdict="FAIL (exit $rc)"; FAILED=1; }
  { echo; echo "## $name: $verdict in $((SECONDS - started)) s"; echo; echo '```'; tail -n 25 "$log"; echo '```'; } >>"$REPORT"
  echo "   $verdict in $((SECONDS - started)) s"
}

PYTEST=($PY -m pytest tests/engines/test_determinism.py --confcutdir=tests/engines -q -p no:cacheprovider)
for dtype in float16 bfloat16; do
  step "engine determinism, GPT $dtype, SD float16" "$DETERMINISM_LIMIT_S" \
    env HELIUM_TEST_DEVICE=$DEVICE HELIUM_TEST_GPT_DTYPE=$dtype "${PYTEST[@]}"
done

if [[ $DRY_RUN == 1 ]]; then
  TINY=(--hidden 64 --layers 2 --gpt-tasks 4 --max-new-tokens 8 --sd-tasks 2 --side 64 --steps 2)
  step "replicas 1, 2, 4 (tiny shapes, CPU)" 300 $PY -m benchmarks.engine_throughput --device cpu \
    --threads 1 --replicas 1 2 4 "${TINY[@]}" --out "$OUT_DIR/engine_throughput_tiny.md"
else
  # 0.5B: every scenario, SD too; 1.5B: GPT only (the SD model is the same tiny one).
  step "engine_throughput Qwen2.5-0.5B shapes, replicas 1 2 4" 180 $PY -m benchmarks.engine_throughput \
    --device cuda --qwen 0.5b --gpt-dtype bfloat16 --gpt-tasks 8 --max-new-tokens 32 --replicas 1 2 4 \
    --sd-tasks 4 --side 128 --steps 4 --out "$OUT_DIR/engine_throughput_qwen0.5b.md"
  step "engine_throughput Qwen2.5-1.5B shapes, replicas 2 4" 120 $PY -m benchmarks.engine_throughput \
    --device cuda --qwen 1.5b --gpt-dtype bfloat16 --gpt-tasks 8 --max-new-tokens 32 --replicas 2 4 \
    --skip-sd --out "$OUT_DIR/engine_throughput_qwen1.5b.md"
fi

for table in "$OUT_DIR"/engine_throughput_*.md; do
  [[ -f $table ]] && { echo; echo "## $(basename "$table" .md)"; echo; cat "$table"; } >>"$REPORT"
done
echo "report: $REPORT"
exit $FAILED
