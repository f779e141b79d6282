"""Placement without Ray: slots planned from card models, their names, and the resources they need."""

from __future__ import annotations

import pytest

from cluster.coordinator.scheduling.placement import (
    PoolError,
    actor_options,
    check_cluster_resources,
    plan_slots,
    required_resources,
)
from cluster.protocol.cards import CardModel

H100 = "NVIDIA H100 80GB HBM3"


def test_slots_are_named_by_card_model_and_place_in_the_group() -> None:
    card_a, card_b = CardModel("Card A", 8, "r"), CardModel("Card B", 16, "r")
    slots = plan_slots([card_a, card_b, card_a, card_b, card_a])
    assert [slot.index for slot in slots] == [0, 1, 2, 3, 4]
    assert [slot.name for slot in slots] == [
        f"helium-worker-{card_a.short_id}-0", f"helium-worker-{card_b.short_id}-0",
        f"helium-worker-{card_a.short_id}-1", f"helium-worker-{card_b.short_id}-1",
        f"helium-worker-{card_a.short_id}-2",
    ]  # fmt: skip
    assert required_resources(slots) == {card_a.resource_name: 3.0, card_b.resource_name: 2.0}


def test_missing_card_resources_fail_naming_the_declaration() -> None:
    slots = plan_slots([CardModel(H100, 80, "r")] * 2)
    with pytest.raises(PoolError, match=r"needs 2, cluster has 1.*ray.init\(resources="):
        check_cluster_resources(slots, {slots[0].card.resource_name: 1.0})
    check_cluster_resources(slots, {slots[0].card.resource_name: 2.0, "CPU": 2.0})


def test_a_gpu_rig_asks_ray_for_one_gpu_and_the_card_resource(rig) -> None:
    (slot,) = plan_slots([CardModel(H100, 80, "r")])
    cpu = actor_options(slot, rig, "ns")
    assert cpu["resources"] == {slot.card.resource_name: 1} and "num_gpus" not in cpu
    assert cpu["max_concurrency"] == rig.places_per_gpu + 2 and cpu["name"] == slot.name
    cuda = actor_options(slot, rig.model_copy(update={"device": "cuda"}), "ns")
    assert cuda["num_gpus"] == 1
