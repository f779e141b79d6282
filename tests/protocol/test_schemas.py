"""The committed JSON Schema files are exactly what the models generate, and they describe real documents."""

from __future__ import annotations

import json

import pytest

from cluster.protocol.schema_files import SCHEMA_DIR, SCHEMA_MODELS, render_schema, write_schemas


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_committed_schema_is_up_to_date(name):
    committed = (SCHEMA_DIR / name).read_text()
    assert committed == render_schema(SCHEMA_MODELS[name]), (
        f"cluster/protocol/schema/{name} is stale: run `python -m cluster.protocol.schema_files`"
    )


def test_write_schemas_writes_every_file(tmp_path):
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(SCHEMA_MODELS)
    for path in written:
        assert path.read_text() == (SCHEMA_DIR / path.name).read_text()


def test_schemas_ignore_unknown_fields_and_state_the_spec_ranges():
    gpt = json.loads((SCHEMA_DIR / "gpt-task-args.json").read_text())
    sd = json.loads((SCHEMA_DIR / "sd-task-args.json").read_text())
    # unknown fields are allowed (and ignored by the models), as in Crynux's published schemas ...
    assert "additionalProperties" not in gpt and "additionalProperties" not in sd
    # ... but a content block is exactly what it says, as there
    assert gpt["$defs"]["TextBlock"]["additionalProperties"] is False
    assert set(gpt["required"]) == {"model", "messages"}
    assert set(sd["required"]) == {"base_model", "prompt", "task_config"}
    steps = sd["$defs"]["TaskConfig"]["properties"]["steps"]
    assert (steps["minimum"], steps["maximum"]) == (1, 100)
    assert sd["properties"]["version"]["default"] == "2.5.0"
