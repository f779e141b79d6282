"""How a rig's GPUs become workers, without Ray: replicas, batched places, multi-GPU layouts, and the
layouts that are refused with the option to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.config import EngineConfig, RigConfig, VirtualGpus, WorkerLayout
from cluster.coordinator.scheduling.placement import (
    PoolError,
    actor_options,
    check_node_capacity,
    plan_workers,
    required_resources,
)
from cluster.protocol.cards import CardModel

H100 = CardModel("NVIDIA H100 80GB HBM3", 80, "vllm-x")
VLLM = EngineConfig(text="vllm", image="diffusers", deterministic=True, runtime_tag="vllm-x")
TRANSFORMERS = EngineConfig(text="transformers", image="diffusers", deterministic=True, runtime_tag="tf-x")


def rig(**overrides: object) -> RigConfig:
    base: dict[str, object] = dict(
        name="t", device="cuda", discover_gpus=True, places_per_gpu=1, model_cache_dir="/m",
        vram_budget_fraction=0.8,
    )  # fmt: skip
    return RigConfig.model_validate({**base, **overrides})


def layout(*gpus_per_worker: int) -> list[WorkerLayout]:
    return [WorkerLayout(card_name=H100.gpu_name, gpus_per_worker=list(gpus_per_worker))]


def test_replicas_share_a_gpu_each_with_its_share_of_vram() -> None:
    slots = plan_workers([[H100, H100]], rig(places_per_gpu=2), TRANSFORMERS)
    assert len(slots) == 4 and {s.num_places for s in slots} == {1} and {s.gpu_share for s in slots} == {0.5}
    assert {(s.card.gpu_name, s.card.vram_gb, s.card.runtime) for s in slots} == {
        (H100.gpu_name, 40, "vllm-x")
    }
    assert required_resources(slots) == {H100.resource_name: 2.0}  # still one unit per GPU
    options = actor_options(slots[0], rig(places_per_gpu=2), "ns")
    assert options["num_gpus"] == 0.5 and options["resources"] == {H100.resource_name: 0.5}
    assert options["max_concurrency"] == 1 + 2  # one job at a time, info() and loaded_models() beside it


def test_three_replicas_still_need_one_gpu() -> None:
    slots = plan_workers([[H100]], rig(places_per_gpu=3), TRANSFORMERS)
    assert required_resources(slots) == {H100.resource_name: 1.0}


def test_batched_is_one_worker_per_gpu_with_its_places() -> None:
    slots = plan_workers([[H100, H100]], rig(places_per_gpu=4, gpu_sharing="batched"), VLLM)
    assert [s.num_places for s in slots] == [4, 4] and {s.card for s in slots} == {H100}
    assert actor_options(slots[0], rig(places_per_gpu=4), "ns")["max_concurrency"] == 4 + 2


def test_an_8_gpu_node_as_four_1x_and_two_2x_workers() -> None:
    slots = plan_workers(
        [[H100] * 8], rig(gpu_sharing="batched", worker_layouts=layout(1, 1, 1, 1, 2, 2)), VLLM
    )
    two = CardModel(f"2x {H100.gpu_name}", 160, "vllm-x-tp2")
    assert [s.card for s in slots] == [H100] * 4 + [two] * 2
    assert [s.name.rsplit("-", 1)[1] for s in slots] == [
        "0",
        "1",
        "2",
        "3",
        "0",
        "1",
    ]  # numbered per card model
    assert {s.gpu_card for s in slots} == {H100} and required_resources(slots) == {H100.resource_name: 8.0}
    assert actor_options(slots[-1], rig(), "ns")["num_gpus"] == 2
    assert actor_options(slots[-1], rig(), "ns")["resources"] == {H100.resource_name: 2}


def test_transformers_names_its_layer_split() -> None:
    slots = plan_workers([[H100] * 4], rig(worker_layouts=layout(4)), TRANSFORMERS)
    assert [(s.card.gpu_name, s.card.vram_gb, s.card.runtime) for s in slots] == [
        (f"4x {H100.gpu_name}", 320, "vllm-x-pp4")
    ]


def test_each_node_is_split_by_the_layout() -> None:
    slots = plan_workers([[H100] * 4, [H100] * 4], rig(worker_layouts=layout(4)), VLLM)
    assert len(slots) == 2 and {s.num_gpus for s in slots} == {4}


@pytest.mark.parametrize(
    ("overrides", "engine", "message"),
    [
        (
            dict(worker_layouts=layout(4, 2)),
            VLLM,
            r"splits 6 GPUs .* node 0 has 8: change rig.worker_layouts",
        ),
        (dict(worker_layouts=layout(2, 2, 2, 2), places_per_gpu=2), VLLM, r"rig.gpu_sharing=batched"),
        (dict(gpu_sharing="batched"), TRANSFORMERS, r"set engine.text=vllm"),
    ],
)
def test_layouts_the_code_cannot_run_are_refused_naming_the_option(overrides, engine, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PoolError, match=message):
        plan_workers([[H100] * 8], rig(**overrides), engine)


def test_a_worker_larger_than_any_ray_node_is_refused_naming_the_layout() -> None:
    slots = plan_workers([[H100] * 4], rig(worker_layouts=layout(4)), VLLM)
    node = {H100.resource_name: 2.0, "GPU": 2.0}
    with pytest.raises(PoolError, match=r"needs 4 GPUs .* largest node holds 2 .* change rig.worker_layouts"):
        check_node_capacity(slots, [node, node])
    check_node_capacity(slots, [{H100.resource_name: 4.0}])


def test_config_refuses_empty_or_repeated_layouts() -> None:
    with pytest.raises(ValidationError, match="must be >= 1"):
        WorkerLayout(card_name="A", gpus_per_worker=[2, 0])
    slots = [VirtualGpus(card_name="A", vram_gb=8, count=2)]
    with pytest.raises(ValidationError, match="names a card model twice"):
        rig(
            discover_gpus=False,
            virtual_gpus=slots,
            worker_layouts=[WorkerLayout(card_name="A", gpus_per_worker=[2])] * 2,
        )
