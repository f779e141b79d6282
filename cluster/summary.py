"""What ``python -m cluster`` prints while the cluster itself is being built: config, keys, schemas."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from cluster.config import ClusterConfig
from cluster.protocol.hashes import card_model_key
from cluster.protocol.schema_files import SCHEMA_DIR, SCHEMA_MODELS

NOT_BUILT_YET = [
    "the bridge and chat page (issue: the bridge)",
    "KubeRay manifests and the container image (issue: deployment)",
]


def runtime_tag(config: ClusterConfig) -> str:
    if config.engine.runtime_tag:
        return config.engine.runtime_tag
    return f"{config.engine.text}-unversioned"


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
    print("card model slots:")
    for group in rig.virtual_slots:
        key = card_model_key(group.card_name, group.vram_gb, runtime_tag(config))
        num_slots = group.count * rig.slots_per_gpu
        print(f"  {num_slots} x {group.card_name} ({group.vram_gb} GB)  card model key 0x{key.hex()}")
    print(f"task schemas (JSON Schema files in {SCHEMA_DIR}):")
    for filename, model in SCHEMA_MODELS.items():
        print(f"  {filename} -> {model.__name__}")
        print("\n".join(_fields(model)))
    print("not built yet:")
    for item in NOT_BUILT_YET:
        print(f"  - {item}")
