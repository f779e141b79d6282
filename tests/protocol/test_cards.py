"""The card model: its on-chain key, the Ray resource that places its workers, and naming it by a prefix."""

from __future__ import annotations

from cluster.protocol.cards import CardModel, key_matches
from cluster.protocol.hashes import card_model_key

H100 = "NVIDIA H100 80GB HBM3"


def test_card_model_key_and_resource_name() -> None:
    card = CardModel(H100, 80, "transformers-5.0")
    assert card.key == card_model_key(H100, 80, "transformers-5.0")
    assert card.join_args == (H100, 80, "transformers-5.0")
    assert card.resource_name == "card:" + card.key.hex()[:16]
    assert card.resource_name.isascii() and " " not in card.resource_name
    # Same product and memory, other numerics software: another card model.
    assert CardModel(H100, 80, "vllm-0.11").key != card.key


def test_a_card_model_is_named_by_its_key_or_a_prefix_of_at_least_four_digits() -> None:
    card = CardModel(H100, 80, "r")
    full = card.key.hex()
    assert card.matches(full) and card.matches("0x" + full.upper()) and card.matches(card.short_id)
    assert not card.matches(full[:3])  # too short to name one card model of a farm
    assert not key_matches(card.key, "ffff" if not full.startswith("ffff") else "0000")
