"""GPU discovery without a GPU: the CPU rig's virtual GPUs, and NVML through a fake ``pynvml`` module.

The fake stands in for the one edge this machine cannot have (an NVIDIA driver); everything above it,
names, VRAM rounding, card model keys and Ray resource names, is the real code.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cluster.config import EngineConfig, RigConfig
from cluster.protocol.cards import CardModel
from cluster.workers import gpu
from cluster.workers.engines import runtime_tag_of
from cluster.workers.gpu import GpuDiscoveryError, GpuSpec, discover_nvml_gpus, virtual_gpus

RIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "rig"
H100 = "NVIDIA H100 80GB HBM3"
RTX = "NVIDIA GeForce RTX 4090"


def fake_nvml(
    devices: list[tuple[str | bytes, int]], *, init_error: Exception | None = None
) -> types.ModuleType:
    """A ``pynvml`` with ``devices`` as (name, total memory in bytes); records init/shutdown calls."""
    module = types.ModuleType("pynvml")
    module.calls = []  # type: ignore[attr-defined]

    def init() -> None:
        module.calls.append("init")  # type: ignore[attr-defined]
        if init_error is not None:
            raise init_error

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: module.calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: devices[h][0]  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=devices[h][1], free=devices[h][1], used=0
    )
    return module


def mib(n: int) -> int:
    return n * 1024**2


def test_nvml_discovery_reads_full_names_and_rounds_vram_up(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml([(H100, mib(81559)), (H100.encode(), mib(81559)), (RTX, mib(24564))])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    specs = discover_nvml_gpus()
    # 81559 MiB is what an H100 80GB reports: ceil(81559 / 1024) = 80; old pynvml returns bytes names.
    assert specs == [GpuSpec(0, H100, 80), GpuSpec(1, H100, 80), GpuSpec(2, RTX, 24)]
    assert nvml.calls == ["init", "shutdown"]  # type: ignore[attr-defined]


def test_nvml_failures_say_what_to_change(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = fake_nvml([], init_error=RuntimeError("NVML Shared Library Not Found"))
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    with pytest.raises(GpuDiscoveryError, match="discover_gpus=false"):
        discover_nvml_gpus()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # an import of it now raises ImportError
    with pytest.raises(GpuDiscoveryError, match="nvidia-ml-py"):
        discover_nvml_gpus()


def test_node_resources_cli_prints_one_unit_per_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([(H100, mib(81559))] * 2 + [(RTX, mib(24564))]))
    gpu.main(["--runtime-tag", "vllm-0.11.0-batch-invariant"])
    printed = json.loads(capsys.readouterr().out)
    h100 = CardModel(H100, 80, "vllm-0.11.0-batch-invariant")
    rtx = CardModel(RTX, 24, "vllm-0.11.0-batch-invariant")
    assert printed == {h100.resource_name: 2.0, rtx.resource_name: 1.0}


def test_virtual_gpus_of_the_cpu_devnet_rig(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIUM_MODEL_CACHE", "/tmp/helium-models")
    rig = RigConfig.model_validate(
        OmegaConf.to_container(OmegaConf.load(RIG_DIR / "cpu-devnet.yaml"), resolve=True)
    )
    specs = virtual_gpus(rig)
    assert [s.index for s in specs] == list(range(6))
    assert [(s.name, s.vram_gb) for s in specs] == [("Devnet Virtual Card A", 8)] * 3 + [
        ("Devnet Virtual Card B", 16)
    ] * 3
    assert specs[0].card_model("r") == CardModel("Devnet Virtual Card A", 8, "r")


def test_runtime_tag_from_config_or_text_engine() -> None:
    assert (
        runtime_tag_of(EngineConfig(text="vllm", image="diffusers", deterministic=True, runtime_tag="x"))
        == "x"
    )
    tag = runtime_tag_of(
        EngineConfig(text="transformers", image="diffusers", deterministic=True, runtime_tag=None)
    )
    assert tag.startswith("transformers-") and "-torch-" in tag
