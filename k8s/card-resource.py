"""Print the Ray resource that names one card model, for a KubeRay worker group's rayStartParams.

    python k8s/card-resource.py "NVIDIA H100 80GB HBM3" 80 vllm-0.33.0-batch-invariant --count 8
    {"card:...": 8}
    python k8s/card-resource.py "NVIDIA H100 80GB HBM3" 80 vllm-0.33.0-batch-invariant --count 8 --kuberay
    "{\"card:...\": 8}"

GPU_NAME is the driver's full product name (nvidia-smi --query-gpu=name), VRAM_GB the memory rounded up
to whole GB (ceil(MiB / 1024), nvidia-smi --query-gpu=memory.total), RUNTIME the image's engine tag
("vllm-<vLLM version>-batch-invariant"). On a node that has the GPUs and the image,
`python -m cluster.workers.gpu --text-engine vllm` prints the same thing from NVML.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for `cluster`

from cluster.protocol.cards import CardModel


def card_resources(gpu_name: str, vram_gb: int, runtime: str, count: int) -> dict[str, float]:
    return {CardModel(gpu_name, vram_gb, runtime).resource_name: count}


def kuberay_value(resources: dict[str, float]) -> str:
    """The form rayStartParams.resources takes: KubeRay puts it in a shell command line unquoted."""
    return '"' + json.dumps(resources).replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="card-resource.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("gpu_name")
    parser.add_argument("vram_gb", type=int)
    parser.add_argument("runtime")
    parser.add_argument("--count", type=int, default=1, help="GPUs of this card model in one pod")
    parser.add_argument("--kuberay", action="store_true", help="print the rayStartParams.resources value")
    options = parser.parse_args(argv)
    resources = card_resources(options.gpu_name, options.vram_gb, options.runtime, options.count)
    print(kuberay_value(resources) if options.kuberay else json.dumps(resources))


if __name__ == "__main__":
    main()
