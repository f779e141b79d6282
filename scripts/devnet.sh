#!/usr/bin/env bash
# Run the main job on this machine: set up, then start the node cluster with the given Hydra overrides
# (default rig: cpu-devnet, network: devnet). Example: scripts/devnet.sh rig.places_per_gpu=2
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
exec .venv/bin/python -m network.devnet "$@"
