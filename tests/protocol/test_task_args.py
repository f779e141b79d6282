"""Task argument parsing: valid documents round-trip; malformed ones are ArgumentsInvalid naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.sd import SDTaskArgs
from cluster.protocol.task import (
    MAX_TASK_ARGS_BYTES,
    ROOT_FIELD,
    TaskType,
    max_nesting,
    nesting_past,
    parse_task_args,
    task_cap,
)
from tests.protocol import strategies

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CASES = [(TaskType.GPT, strategies.gpt_args), (TaskType.SD, strategies.sd_args)]


@pytest.mark.parametrize(("task_type", "documents"), CASES)
def test_valid_documents_round_trip_unchanged(task_type, documents):
    @SETTINGS
    @given(documents)
    def check(document: dict[str, Any]):
        args = parse_task_args(task_type, json.dumps(document))
        # every field the document set is kept exactly, nothing is added to what it set
        assert args.model_dump(mode="json", exclude_unset=True) == document
        # and the model's own JSON parses back to an equal model
        assert parse_task_args(task_type, args.model_dump_json()) == args
        assert parse_task_args(task_type, json.dumps(document).encode("utf-8")) == args

    check()


def _get(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        document = document[int(part)] if isinstance(document, list) else document[part]
    return document


FREE_FORM = {"tools", "tool_calls", "template_args"}  # objects of any keys: nothing in them is unknown


def _objects(document: dict[str, Any], path: tuple[str, ...] = ()):
    """Every JSON object inside a document that has a fixed set of fields, with its path."""
    yield path, document
    for key, value in document.items():
        if key in FREE_FORM:
            continue
        children = [(str(i), v) for i, v in enumerate(value)] if isinstance(value, list) else [(key, value)]
        for child_key, child in children:
            child_path = (*path, key) if not isinstance(value, list) else (*path, key, child_key)
            if isinstance(child, dict):
                yield from _objects(child, child_path)


@pytest.mark.parametrize(("task_type", "documents"), CASES)
def test_unknown_fields_are_ignored_as_the_reference_does(task_type, documents):
    @SETTINGS
    @given(documents, st.data())
    def check(document: dict[str, Any], data: st.DataObject):
        expected = parse_task_args(task_type, json.dumps(document))
        candidates = [(p, o) for p, o in _objects(document) if "type" not in o]  # content blocks: below
        _path, target = data.draw(st.sampled_from(candidates))
        target["zz_unknown_field_of_a_newer_client"] = {"any": [1, "value"]}
        assert parse_task_args(task_type, json.dumps(document)) == expected

    check()


def test_a_content_block_with_an_unknown_field_is_refused_naming_it():
    document = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}],
    }
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(TaskType.GPT, json.dumps(document))
    assert any(f.startswith("messages.0.content.0") and f.endswith(".x") for f in err.value.fields)


WRONG_TYPES = {
    str: [1, True, None, ["x"], {"a": 1}],
    int: ["7", 7.5, True, None, [7]],
    float: ["1.0", True, None, {}],
    bool: [1, "true", None],
    list: [{}, "x", 3],
}
GPT_TYPED_FIELDS = [
    (("model",), str),
    (("messages",), list),
    (("seed",), int),
    (("generation_config", "max_new_tokens"), int),
    (("generation_config", "temperature"), float),
    (("generation_config", "do_sample"), bool),
    (("messages", "0", "content"), str),  # (or a list of content blocks: the lists here are not)
]
SD_TYPED_FIELDS = [
    (("prompt",), str),
    (("task_config", "steps"), int),
    (("task_config", "seed"), int),
    (("task_config", "cfg"), float),
    (("task_config", "safety_checker"), bool),
    (("negative_prompt",), str),
]
MINIMAL = {
    TaskType.GPT: {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "generation_config": {"max_new_tokens": 5, "temperature": 0.5, "do_sample": True},
    },
    TaskType.SD: {
        "base_model": "sd",
        "prompt": "a cat",
        "negative_prompt": "",
        "task_config": {"steps": 4, "seed": 1, "cfg": 7.0, "safety_checker": False},
    },
}


def _set(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(document))
    parent = _get(document, path[:-1])
    parent[int(path[-1]) if isinstance(parent, list) else path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("task_type", "path", "bad"),
    [
        (tt, path, bad)
        for tt, fields in ((TaskType.GPT, GPT_TYPED_FIELDS), (TaskType.SD, SD_TYPED_FIELDS))
        for path, kind in fields
        for bad in WRONG_TYPES[kind]
        # null is a valid value of the optional fields
        if not (bad is None and path[-1] in {"content", "max_new_tokens", "temperature", "do_sample"})
    ],
)
def test_wrong_types_are_refused_naming_the_field(task_type, path, bad):
    document = _set(MINIMAL[task_type], path, bad)
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(task_type, json.dumps(document))
    assert ".".join(path) in err.value.fields, err.value.fields


OUT_OF_RANGE = [
    (TaskType.GPT, ("seed",), -1),
    (TaskType.GPT, ("seed",), 2**63),
    (TaskType.GPT, ("generation_config", "max_new_tokens"), 0),
    (TaskType.GPT, ("generation_config", "temperature"), -0.5),
    (TaskType.GPT, ("generation_config", "top_p"), 1.5),
    (TaskType.GPT, ("generation_config", "num_return_sequences"), 0),
    (TaskType.GPT, ("quantize_bits",), 16),
    (TaskType.GPT, ("dtype",), "float64"),
    (TaskType.GPT, ("model",), ""),
    (TaskType.GPT, ("messages",), []),
    (TaskType.GPT, ("messages", "0", "role"), "robot"),
    (TaskType.SD, ("task_config", "steps"), 0),
    (TaskType.SD, ("task_config", "steps"), 101),
    (TaskType.SD, ("task_config", "seed"), 2**31),
    (TaskType.SD, ("task_config", "cfg"), 20.5),
    (TaskType.SD, ("task_config", "num_images"), 11),
    (TaskType.SD, ("task_config", "image_width"), 500),
    (TaskType.SD, ("task_config", "image_height"), 4096),
    (TaskType.SD, ("prompt",), ""),
    (TaskType.SD, ("version",), "9.9.9"),
    (TaskType.SD, ("lora",), {"model": "l", "weight": 0}),
    (TaskType.SD, ("lora",), {"model": "l", "weight": 101}),
]


@pytest.mark.parametrize(("task_type", "path", "bad"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused_naming_the_field(task_type, path, bad):
    document = _set(MINIMAL[task_type], path, bad)
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(task_type, json.dumps(document))
    named = ".".join(path)
    assert any(f == named or f.startswith(named + ".") for f in err.value.fields), err.value.fields


@pytest.mark.parametrize("task_type", [TaskType.GPT, TaskType.SD])
def test_missing_required_fields_are_named(task_type):
    required = {TaskType.GPT: ["model", "messages"], TaskType.SD: ["base_model", "prompt", "task_config"]}
    for field in required[task_type]:
        document = {k: v for k, v in MINIMAL[task_type].items() if k != field}
        with pytest.raises(ArgumentsInvalid) as err:
            parse_task_args(task_type, json.dumps(document))
        assert err.value.fields == (field,)


@pytest.mark.parametrize(("task_type", "documents"), CASES)
def test_truncated_json_is_refused(task_type, documents):
    @SETTINGS
    @given(documents, st.data())
    def check(document: dict[str, Any], data: st.DataObject):
        text = json.dumps(document)
        cut = data.draw(st.integers(0, len(text) - 1))
        with pytest.raises(ArgumentsInvalid) as err:
            parse_task_args(task_type, text[:cut])
        assert err.value.fields == (ROOT_FIELD,)

    check()


@SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), st.sampled_from([0, 1]))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes, task_type: int):
    try:
        args = parse_task_args(task_type, raw)
    except ArgumentsInvalid as err:
        assert err.fields
    else:
        assert isinstance(args, GPTTaskArgs | SDTaskArgs)


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe", b"[" * 100_000, b'{"model": NaN}', b"null", b"1e999", b"{}" + b" " * 10, b""],
)
def test_pathological_inputs_are_arguments_invalid(raw: bytes):
    with pytest.raises(ArgumentsInvalid):
        parse_task_args(TaskType.GPT, raw)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused_at_the_root(constant):
    raw = (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "generation_config": {"top_p": %s}}'
    )
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(TaskType.GPT, raw % constant)
    assert err.value.fields == (ROOT_FIELD,) and constant in err.value.message


def test_a_valid_document_is_parsed_once_by_its_validation(monkeypatch):
    """8 MiB of arguments used to be parsed three times (a bracket scan, json.loads for its error wording,
    then the validation): the relay took 6 a second. Now the validation's parse is the only one."""

    def no_second_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json.loads ran on a valid document")

    content = "x" * (MAX_TASK_ARGS_BYTES - 1024)
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], "seed": 1})
    monkeypatch.setattr(json, "loads", no_second_parse)
    assert parse_task_args(TaskType.GPT, raw).messages[0].content == content


# JSON values whose strings are full of brackets, quotes and backslashes: what the scan must see through
BRACKETY_JSON = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=40,
)


@SETTINGS
@given(BRACKETY_JSON, st.integers(0, 12))
def test_the_bracket_count_shortcut_gives_the_full_scans_answer(value: Any, limit: int):
    text = json.dumps(value)
    depth = max_nesting(text)
    assert nesting_past(text, limit) == (depth if depth > limit else None)


def test_oversized_arguments_are_refused_before_parsing():
    with pytest.raises(ArgumentsInvalid, match="above the limit"):
        parse_task_args(TaskType.SD, b" " * (8 * 1024 * 1024 + 1))


def test_unknown_task_type_is_arguments_invalid():
    with pytest.raises(ArgumentsInvalid, match="unknown task type"):
        parse_task_args(7, "{}")


def test_defaults_and_caps_follow_the_spec():
    gpt = parse_task_args(
        TaskType.GPT, json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    )
    assert (gpt.seed, gpt.dtype, gpt.quantize_bits, gpt.tools, gpt.generation_config) == (
        0,
        "auto",
        None,
        None,
        None,
    )
    assert task_cap(gpt) == 256
    assert task_cap(parse_task_args(TaskType.GPT, json.dumps(MINIMAL[TaskType.GPT]))) == 5
    sd = parse_task_args(TaskType.SD, json.dumps({"base_model": "b", "prompt": "p", "task_config": {}}))
    assert sd.version == "2.5.0" and sd.scheduler.method == "DPMSolverMultistepScheduler"
    assert (sd.task_config.image_width, sd.task_config.num_images, sd.task_config.cfg) == (512, 6, 5.0)
    assert task_cap(sd) == 6
    assert sd.base_model_name == "b" and sd.base_model_variant is None


def test_parsed_arguments_are_frozen():
    args = parse_task_args(TaskType.GPT, json.dumps(MINIMAL[TaskType.GPT]))
    with pytest.raises(ValueError):
        args.seed = 5  # type: ignore[misc]


# -- property twins: any value outside a numeric range, or of a JSON type the field does not take ------------

INT_RANGES = [  # (task type, path, lowest valid, highest valid)
    (TaskType.GPT, ("seed",), 0, 2**63 - 1),
    (TaskType.GPT, ("generation_config", "max_new_tokens"), 1, 32768),
    (TaskType.GPT, ("generation_config", "num_beams"), 1, 16),
    (TaskType.GPT, ("generation_config", "num_return_sequences"), 1, 16),
    (TaskType.SD, ("task_config", "steps"), 1, 100),
    (TaskType.SD, ("task_config", "seed"), 0, 2**31 - 1),
    (TaskType.SD, ("task_config", "num_images"), 1, 10),
]
FLOAT_RANGES = [
    (TaskType.GPT, ("generation_config", "top_p"), 0.0, 1.0),
    (TaskType.GPT, ("generation_config", "min_p"), 0.0, 1.0),
    (TaskType.SD, ("task_config", "cfg"), 0.0, 20.0),
]


def _outside_ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(max_value=low - 1) | st.integers(min_value=high + 1)


def _outside_floats(low: float, high: float) -> st.SearchStrategy[float]:
    below = st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False)
    return below | above


OUT_OF_RANGE_CASES = st.one_of(
    *[st.tuples(st.just(tt), st.just(path), _outside_ints(lo, hi)) for tt, path, lo, hi in INT_RANGES],
    *[st.tuples(st.just(tt), st.just(path), _outside_floats(lo, hi)) for tt, path, lo, hi in FLOAT_RANGES],
)


@SETTINGS
@given(OUT_OF_RANGE_CASES)
def test_any_out_of_range_value_is_refused_naming_the_field(case):
    task_type, path, bad = case
    document = _set(MINIMAL[task_type], path, bad)
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(task_type, json.dumps(document))
    assert ".".join(path) in err.value.fields, (bad, err.value.fields)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=5,
)
ACCEPTS = {  # what JSON values a field of each kind may hold (strict models: no coercion)
    str: lambda v: isinstance(v, str),
    int: lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    list: lambda v: isinstance(v, list),
}
TYPED_CASES = [(TaskType.GPT, p, k) for p, k in GPT_TYPED_FIELDS] + [
    (TaskType.SD, p, k) for p, k in SD_TYPED_FIELDS
]


@SETTINGS
@given(st.sampled_from(TYPED_CASES), JSON_VALUES)
def test_any_value_of_a_wrong_json_type_is_refused_naming_the_field(case, bad):
    task_type, path, kind = case
    nullable = path[-1] in {"content", "max_new_tokens", "temperature", "do_sample"}
    empty_content = path[-1] == "content" and bad == []  # a message of no content blocks is valid
    if ACCEPTS[kind](bad) or (bad is None and nullable) or empty_content:
        return  # a value of the right type: not this property's concern
    document = _set(MINIMAL[task_type], path, bad)
    with pytest.raises(ArgumentsInvalid) as err:
        parse_task_args(task_type, json.dumps(document))
    named = ".".join(path)
    assert any(f == named or f.startswith(named + ".") for f in err.value.fields), (bad, err.value.fields)
