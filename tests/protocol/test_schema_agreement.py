"""The committed JSON Schemas (what applications in other languages validate with) and the pydantic models
(what the relay, the bridge and the nodes validate with) give the same verdict on the same documents:
valid ones from the strategies and Crynux's examples, and those mutated into many invalid shapes."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.schema_files import SCHEMA_DIR
from cluster.protocol.task import TaskType, parse_task_args
from tests.protocol import strategies
from tests.protocol.test_crynux_examples import ACCEPTED

SCHEMAS = {
    TaskType.GPT: Draft202012Validator(json.loads((SCHEMA_DIR / "gpt-task-args.json").read_text())),
    TaskType.SD: Draft202012Validator(json.loads((SCHEMA_DIR / "sd-task-args.json").read_text())),
}
VALID = {
    TaskType.GPT: strategies.gpt_args
    | st.sampled_from([e["args"] for t, e in ACCEPTED if t is TaskType.GPT]),
    TaskType.SD: strategies.sd_args | st.sampled_from([e["args"] for t, e in ACCEPTED if t is TaskType.SD]),
}
# What a mutation writes: every JSON type, integral and fractional floats, values at the models' edges,
# and objects shaped like the ones the models hold (content blocks, schedulers, base models).
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, 1, 8, 64, 100, 101, 2**31, 2**63, -1]),
    st.integers(-1000, 1000).map(float),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["", "text", "image", "auto", "canny", "LCMScheduler", "2.5.0", "user", "robot"]),
)
SHAPES = st.sampled_from(
    [
        {"type": "text", "text": "x"},
        {"type": "text", "text": ""},
        {"type": "image", "base64": "QQ=="},
        {"type": "text"},
        {"method": "canny"},
        {"method": "LCMScheduler", "args": {"clip_samples": 1}},
        {"name": "m", "variant": None},
        {"role": "user", "content": "hi"},
        {"tokenize": True},
        {},
    ]
).map(copy.deepcopy)  # fmt: skip  (a fresh copy: mutations must not edit the pool)
VALUES = st.recursive(
    LEAVES | SHAPES,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)


def _containers(document: Any, path: tuple[Any, ...] = ()):
    """Every object and list in a document, with its path."""
    if isinstance(document, dict | list):
        yield path, document
        items = document.items() if isinstance(document, dict) else enumerate(document)
        for key, child in items:
            yield from _containers(child, (*path, key))


@st.composite
def mutated(draw: st.DrawFn, task_type: TaskType) -> dict[str, Any]:
    document = copy.deepcopy(draw(VALID[task_type]))
    for _ in range(draw(st.integers(0, 3))):
        _path, target = draw(st.sampled_from(list(_containers(document))))
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        action = draw(st.sampled_from(["replace", "delete", "add"] if keys else ["add"]))
        if action == "add":
            key = draw(st.text(max_size=6) | st.sampled_from(["seed", "type", "method", "args", "content"]))
            if isinstance(target, dict):
                target[key] = draw(VALUES)
            else:
                target.append(draw(VALUES))
        elif action == "replace":
            target[draw(st.sampled_from(keys))] = draw(VALUES)
        else:
            del target[draw(st.sampled_from(keys))]
    return document


def _model_accepts(task_type: TaskType, document: dict[str, Any]) -> bool:
    try:
        parse_task_args(task_type, json.dumps(document))
    except ArgumentsInvalid:
        return False
    return True


def test_schema_and_models_agree_on_valid_and_invalid_documents():
    verdicts: list[bool] = []

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([TaskType.GPT, TaskType.SD]).flatmap(lambda t: st.tuples(st.just(t), mutated(t))))
    def check(case: tuple[TaskType, dict[str, Any]]) -> None:
        task_type, document = case
        by_schema = SCHEMAS[task_type].is_valid(document)
        assert _model_accepts(task_type, document) == by_schema, (task_type.name, document)
        verdicts.append(by_schema)

    check()
    # both verdicts were exercised, each many times
    assert verdicts.count(True) >= 50 and verdicts.count(False) >= 50, (
        verdicts.count(True),
        verdicts.count(False),
    )
