"""What ``python -m cluster`` prints while the cluster itself is being built: config, keys, schemas."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from cluster.config import ClusterConfig
from cluster.protocol.cards import CardModel
from cluster.protocol.schema_files import SCHEMA_DIR, SCHEMA_MODELS


def _describe(prop: dict[str, Any]) -> str:
    """A short type name for one JSON Schema property: ``list[Message] | null``, ``'a'|'b'``."""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    for union in ("anyOf", "oneOf"):
        if union in prop:
            return " | ".join(_describe(p) for p in prop[union])
    if "enum" in prop:
        return "|".join(repr(v) for v in prop["enum"])
    if "const" in prop:
        return repr(prop["const"])
    if prop.get("type") == "array":
        return f"list[{_describe(prop.get('items', {}))}]"
    return str(prop.get("type", "any"))


def _fields(model: type[BaseModel], indent: str = "    ") -> list[str]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    lines = []
    for name, prop in schema["properties"].items():
        default = "required" if name in required else f"default {json.dumps(prop.get('default'))}"
        lines.append(f"{indent}{name}: {_describe(prop)} ({default})")
    return lines


def print_summary(config: ClusterConfig) -> None:
    rig = config.rig
    print(
        f"rig {rig.name!r} on {rig.device}, network {config.network.name!r}, text engine {config.engine.text}"
    )
    _print_cards(config)
    print(f"task schemas (JSON Schema files in {SCHEMA_DIR}):")
    for filename, model in SCHEMA_MODELS.items():
        print(f"  {filename} -> {model.__name__}")
        print("\n".join(_fields(model)))


def _print_cards(config: ClusterConfig) -> None:
    """The node accounts and the card model keys they join with: the very keys the workers compute."""
    from cluster.workers.engines import runtime_tag_of

    rig = config.rig
    if rig.discover_gpus:
        print("card models: discovered on the GPU nodes at start (`python -m cluster.workers.gpu` there)")
        return
    try:
        runtime = runtime_tag_of(config.engine)
    except ImportError as exc:
        print(f"card models: the {config.engine.text} engine is not installed here ({exc.name}); "
              "set engine.runtime_tag to see the keys")  # fmt: skip
        return
    print(f"node accounts by card model (runtime tag {runtime}):")
    for group in rig.virtual_gpus:
        card = CardModel(group.card_name, group.vram_gb, runtime)
        num_slots = group.count * rig.places_per_gpu
        print(f"  {num_slots} x {group.card_name} ({group.vram_gb} GB)  card model key 0x{card.key.hex()}")
