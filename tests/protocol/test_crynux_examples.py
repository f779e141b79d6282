"""Every task-argument document Crynux's applications, SDK, bridge, docs and examples build is accepted
(tests/protocol/crynux_examples/, each with its source), and each one's invalid twins are refused naming
the field. The same documents pass the JSON Schemas this project publishes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.schema_files import SCHEMA_DIR
from cluster.protocol.task import TaskType, parse_task_args

HERE = Path(__file__).parent / "crynux_examples"
EXAMPLES = {
    TaskType.GPT: json.loads((HERE / "gpt.json").read_text()),
    TaskType.SD: json.loads((HERE / "sd.json").read_text()),
}
SCHEMAS = {
    TaskType.GPT: Draft202012Validator(json.loads((SCHEMA_DIR / "gpt-task-args.json").read_text())),
    TaskType.SD: Draft202012Validator(json.loads((SCHEMA_DIR / "sd-task-args.json").read_text())),
}
CASES = [(task_type, example) for task_type, examples in EXAMPLES.items() for example in examples]
IDS = [f"{t.name}-{i}-{e['source'].split('@')[0]}" for i, (t, e) in enumerate(CASES)]
ACCEPTED = [(t, e) for t, e in CASES if "reference_refuses" not in e]
# (path, an invalid value): each accepted example's twins
TWINS = {
    TaskType.GPT: [
        (("model",), ""),
        (("model",), 7),
        (("messages",), []),
        (("messages", "0", "role"), "robot"),
        (("messages", "0", "content"), [{"type": "text", "text": ""}]),
        (("seed",), 0.5),
        (("seed",), "42"),
        (("generation_config",), {"max_new_tokens": 1.5}),
        (("template_args",), {"tokenize": True}),
    ],
    TaskType.SD: [
        (("prompt",), ""),
        (("base_model",), 7),
        (("task_config", "steps"), 2.5),
        (("task_config", "seed"), 2**31),
        (("task_config", "num_images"), "4"),
        (("version",), "3.1.0"),
        (("scheduler",), {"method": "PNDMScheduler"}),
    ],
}


def test_the_examples_cover_every_source_kind():
    sources = " ".join(e["source"] for _, e in CASES)
    for repository in ("crynux-bridge", "chat-web", "gpt-task", "stable-diffusion-task", "crynux-sdk-python",
                       "documentation", "crynux-node", "crynux-relay", "ig-web"):  # fmt: skip
        assert repository in sources
    assert len(ACCEPTED) >= 60


@pytest.mark.parametrize(("task_type", "example"), CASES, ids=IDS)
def test_every_example_is_accepted_where_the_reference_accepts_it(task_type, example):
    raw = json.dumps(example["args"])
    if "reference_refuses" in example:
        with pytest.raises(ArgumentsInvalid):
            parse_task_args(task_type, raw)
        return
    parse_task_args(task_type, raw)
    assert SCHEMAS[task_type].is_valid(example["args"])


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    parent = document
    for part in path[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
    parent[int(path[-1]) if isinstance(parent, list) else path[-1]] = value
    return document


TWIN_CASES = [(t, e, path, bad) for t, e in ACCEPTED for path, bad in TWINS[t]]


@pytest.mark.parametrize(("task_type", "example", "path", "bad"), TWIN_CASES)
def test_each_examples_invalid_twins_are_refused_naming_the_field(task_type, example, path, bad):
    twin = _set(example["args"], path, bad)
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(task_type, json.dumps(twin))
    named = ".".join(path)
    assert any(f == named or f.startswith(named + ".") for f in err.value.fields), err.value.fields
    assert not SCHEMAS[task_type].is_valid(twin)  # the published schema refuses it too
