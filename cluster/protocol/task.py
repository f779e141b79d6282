"""Task types and the one door through which task arguments enter: ``parse_task_args``.

Whatever the bytes, the result is either a validated, frozen argument model or ``ArgumentsInvalid``
naming the offending fields. No other exception escapes: a malformed task is a task error, never a crash.
"""

from __future__ import annotations

import json
import re
from enum import IntEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, PlainSerializer, ValidationError, WithJsonSchema

from cluster.protocol.errors import ArgumentsInvalid
from cluster.protocol.gpt import GPTTaskArgs
from cluster.protocol.sd import SDTaskArgs

TaskArgs = GPTTaskArgs | SDTaskArgs
# The largest argument document accepted; a ControlNet image as a data URL is the big case.
MAX_TASK_ARGS_BYTES = 8 * 1024 * 1024
ROOT_FIELD = "(root)"
# No valid document nests deeper than ~10; a cap far above that keeps recursive parsers off the C stack.
MAX_NESTING_DEPTH = 64


class TaskType(IntEnum):
    SD = 0
    GPT = 1


def _task_type_of(value: Any) -> Any:
    """ "gpt" / "sd" (any case) as the task type; a TaskType or 0 / 1 as they are."""
    if isinstance(value, str):
        try:
            return TaskType[value.upper()]
        except KeyError:
            raise ValueError(f"task_type must be 'gpt' or 'sd', got {value!r}") from None
    return value


# A task type where people read and write it (configuration, APIs, records): "gpt" or "sd", a TaskType
# once read, so that no code compares or converts names again.
TaskTypeName = Annotated[
    TaskType,
    BeforeValidator(_task_type_of),
    PlainSerializer(lambda task_type: task_type.name.lower(), return_type=str),
    WithJsonSchema({"type": "string", "enum": ["gpt", "sd"]}),
]

ARGS_MODEL: dict[TaskType, type[GPTTaskArgs] | type[SDTaskArgs]] = {
    TaskType.SD: SDTaskArgs,
    TaskType.GPT: GPTTaskArgs,
}


# pydantic names the member of a union in an error's location ("str", "list[...]", "BaseModelArgs"): not a
# field. Field names are lower case, and none is one of these.
_UNION_MEMBER_LABELS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _is_union_member(part: int | str) -> bool:
    return isinstance(part, str) and (
        part in _UNION_MEMBER_LABELS or "[" in part or "-" in part or part[:1].isupper()
    )


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if not _is_union_member(part)) or ROOT_FIELD


def _invalid(task_type: TaskType, error: ValidationError) -> ArgumentsInvalid:
    details = error.errors(include_url=False, include_input=False)
    fields = tuple(dict.fromkeys(_field_path(d["loc"]) for d in details))
    reasons = "; ".join(f"{_field_path(d['loc'])}: {d['msg']}" for d in details[:10])
    more = f" (and {len(details) - 10} more)" if len(details) > 10 else ""
    return ArgumentsInvalid(f"{task_type.name} task arguments invalid: {reasons}{more}", fields)


def nesting_past(text: str, limit: int) -> int | None:
    """The text's bracket nesting when it is deeper than ``limit``, else None. The number of opening
    brackets bounds the depth: most documents (an 8 MiB prompt or picture holds a few dozen) are never
    scanned, which takes a tenth of a second for 8 MiB."""
    if text.count("[") + text.count("{") <= limit:
        return None
    depth = max_nesting(text)
    return depth if depth > limit else None


def max_nesting(text: str) -> int:
    """The deepest bracket nesting of a JSON text, strings removed first (an upper bound if malformed)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


# A JSON string (the closing quote optional, for truncated text), written as an unrolled loop so that
# runs of plain characters are consumed in one step: an 8 MiB document scans in tens of milliseconds.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?')
_BRACKET = re.compile(r"[\[\]{}]")


def _not_json(constant: str) -> None:
    """NaN and Infinity: Python's json reads them, JSON has no such numbers (and no range holds them)."""
    raise ValueError(f"{constant} is not a JSON number")


def parse_task_args(task_type: TaskType | int, raw: str | bytes) -> TaskArgs:
    """Validate task arguments exactly as uploaded (JSON text or its UTF-8 bytes)."""
    try:
        task_type = TaskType(task_type)
    except ValueError:
        raise ArgumentsInvalid(f"unknown task type {task_type!r}", ("taskType",)) from None
    if len(raw) > MAX_TASK_ARGS_BYTES:
        raise ArgumentsInvalid(
            f"task arguments are {len(raw)} bytes, above the limit of {MAX_TASK_ARGS_BYTES}", (ROOT_FIELD,)
        )
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ArgumentsInvalid(f"task arguments are not UTF-8: {exc}", (ROOT_FIELD,)) from None
    depth = nesting_past(raw, MAX_NESTING_DEPTH)  # before any parser recurses into it
    if depth is not None:
        raise ArgumentsInvalid(
            f"task arguments nest {depth} levels deep, above the limit of {MAX_NESTING_DEPTH}", (ROOT_FIELD,)
        )
    if "NaN" in raw or "Infinity" in raw:  # pydantic's parser reads them: refused by json's, where they are
        _check_json(raw)
    try:
        return ARGS_MODEL[task_type].model_validate_json(raw)  # the one parse, with the validation
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors(include_url=False)):
            _check_json(raw)  # json's wording, with line and column, as before the parse was one
        raise _invalid(task_type, exc) from None


def _check_json(raw: str) -> None:
    """``ArgumentsInvalid`` naming where the text is not JSON (NaN and Infinity included)."""
    try:
        json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError; the depth was checked before
        raise ArgumentsInvalid(f"task arguments are not valid JSON: {exc}", (ROOT_FIELD,)) from None


def parse_gpt_args(raw: str | bytes) -> GPTTaskArgs:
    args = parse_task_args(TaskType.GPT, raw)
    assert isinstance(args, GPTTaskArgs)
    return args


def parse_sd_args(raw: str | bytes) -> SDTaskArgs:
    args = parse_task_args(TaskType.SD, raw)
    assert isinstance(args, SDTaskArgs)
    return args


def task_type_of(args: BaseModel) -> TaskType:
    if isinstance(args, GPTTaskArgs):
        return TaskType.GPT
    if isinstance(args, SDTaskArgs):
        return TaskType.SD
    raise TypeError(f"not task arguments: {type(args).__name__}")


def task_model(args: TaskArgs) -> str:
    """The model a task runs (GPT ``model``, SD ``base_model``'s name): what a warm worker holds."""
    return args.model if isinstance(args, GPTTaskArgs) else args.base_model_name


def task_cap(args: TaskArgs) -> int:
    """The ``cap`` passed to ``createTask``: num_images for SD, max_new_tokens for GPT."""
    if isinstance(args, SDTaskArgs):
        return args.task_config.num_images
    return args.max_new_tokens


def check_within_cap(args: TaskArgs, cap: int | None) -> None:
    """Arguments that ask for more than the task paid for are invalid: the chain ranks a task in the queue
    by its ``cap`` (fee per estimated second), so a task declaring ``cap = 0`` and asking for 6 images
    would jump the queue. ``ArgumentsInvalid`` (a task error on the node, a 400 at the relay); ``cap``
    None (not known) checks nothing."""
    if cap is None:
        return
    wanted = task_cap(args)
    if wanted > cap:
        what = "num_images" if isinstance(args, SDTaskArgs) else "max_new_tokens"
        field = "task_config.num_images" if isinstance(args, SDTaskArgs) else f"generation_config.{what}"
        raise ArgumentsInvalid(f"{what} is {wanted}, above the task's cap of {cap} on chain", (field,))
