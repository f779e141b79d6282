"""GPUs and card models: what NVML finds on a node, the CPU rig's virtual GPUs, and the Ray resource that
names each card model.

A card model is the full product name, the VRAM in GB and the runtime tag (PROTOCOL.md, Nodes). Ray's own
``accelerator_type`` merges SKUs (H100 SXM and PCIe), so every card model also gets a custom Ray resource,
``card:<first 16 hex of its key>``, that the nodes holding it declare (``ray start --resources``) and that
its workers ask for. ``python -m cluster.workers.gpu`` prints that declaration for the node it runs on.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cluster import envs
from cluster.config import EngineConfig, RigConfig
from cluster.protocol.cards import CardModel
from cluster.protocol.hashes import gpu_vram_gb

MIB = 1024**2


class GpuDiscoveryError(RuntimeError):
    """NVML is missing or failed, or a worker's GPU is not the card model it was placed for."""


@dataclass(frozen=True, slots=True)
class GpuSpec:
    index: int  # NVML index on its node (PCI bus order); for a virtual GPU, its place in the rig
    name: str  # the driver's full product name, e.g. "NVIDIA H100 80GB HBM3"
    vram_gb: int  # ceil(MiB / 1024), as declared on chain

    def card_model(self, runtime: str) -> CardModel:
        return CardModel(self.name, self.vram_gb, runtime)


def _import_nvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise GpuDiscoveryError(
            "rig.discover_gpus is true but pynvml is missing: install helium-cluster[gpu] (nvidia-ml-py), "
            "or set rig.discover_gpus=false and list rig.virtual_gpus"
        ) from exc


def discover_nvml_gpus() -> list[GpuSpec]:
    """Every GPU of this node as NVML sees it (all of them, whatever CUDA_VISIBLE_DEVICES says)."""
    nvml = _import_nvml()
    try:
        nvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError: no driver, no device node, driver/library mismatch
        raise GpuDiscoveryError(
            f"NVML did not start on this node ({exc}); is the NVIDIA driver loaded? "
            "Set rig.discover_gpus=false to use rig.virtual_gpus instead"
        ) from exc
    try:
        specs = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):  # nvidia-ml-py before 11.5 returns bytes
                name = name.decode()
            total_mib = nvml.nvmlDeviceGetMemoryInfo(handle).total // MIB
            specs.append(GpuSpec(index, name, gpu_vram_gb(total_mib)))
        return specs
    finally:
        nvml.nvmlShutdown()


def virtual_gpus(rig: RigConfig) -> list[GpuSpec]:
    """The CPU rig's stand-ins: one virtual GPU per ``count`` of each ``rig.virtual_gpus`` group."""
    specs: list[GpuSpec] = []
    for group in rig.virtual_gpus:
        specs.extend(GpuSpec(len(specs), group.card_name, group.vram_gb) for _ in range(group.count))
    return specs


def assigned_gpu_specs(num_gpus: int = 1) -> list[GpuSpec]:
    """The GPUs Ray assigned to the calling worker (``num_gpus`` whole ones, or a share of one), looked
    up in NVML.

    Ray's GPU ids index CUDA_VISIBLE_DEVICES; the worker sets CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA's
    numbering is NVML's.
    """
    import ray

    gpu_ids = ray.get_gpu_ids()
    if len(gpu_ids) != num_gpus or not all(str(i).isdigit() for i in gpu_ids):
        raise GpuDiscoveryError(
            f"a worker of {num_gpus} GPU(s) needs as many numeric GPU ids, Ray gave {gpu_ids}"
        )
    specs = {spec.index: spec for spec in discover_nvml_gpus()}
    missing = [int(i) for i in gpu_ids if int(i) not in specs]
    if missing:
        raise GpuDiscoveryError(f"Ray assigned GPUs {missing} but NVML lists only {sorted(specs)}")
    return [specs[int(i)] for i in gpu_ids]


def node_resources(specs: Iterable[GpuSpec], runtime: str) -> dict[str, float]:
    """The custom resources a node with these GPUs declares: one unit of its card resource per GPU."""
    counts = Counter(spec.card_model(runtime).resource_name for spec in specs)
    return {name: float(count) for name, count in sorted(counts.items())}


def nvml_usage(index: int) -> dict[str, float]:
    """Utilization (0..1) and memory in use of one GPU, for the metrics; empty where NVML is absent."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:  # no pynvml, no driver: a CPU rig
        return {}
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        utilization = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        return {
            "gpu_utilization": utilization,
            "gpu_memory_used_bytes": float(nvml.nvmlDeviceGetMemoryInfo(handle).used),
        }
    except Exception:
        return {}
    finally:
        nvml.nvmlShutdown()


def main(argv: list[str] | None = None) -> None:
    """Print this node's ``ray start --resources`` JSON (for KubeRay's rayStartParams, or by hand)."""
    parser = argparse.ArgumentParser(prog="python -m cluster.workers.gpu", description=main.__doc__)
    parser.add_argument("--text-engine", default="transformers", choices=["transformers", "vllm"])
    parser.add_argument("--runtime-tag", default=envs.RUNTIME_TAG.get())
    options = parser.parse_args(argv)
    from cluster.workers.engines import runtime_tag_of  # imports torch: not for the module's other users

    engine = EngineConfig(
        text=options.text_engine, image="diffusers", deterministic=True, runtime_tag=options.runtime_tag
    )
    print(json.dumps(node_resources(discover_nvml_gpus(), runtime_tag_of(engine))))


if __name__ == "__main__":
    main()
