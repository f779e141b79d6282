"""The shared bases of every model that crosses the network.

- ``StrictModel``: what this network writes itself (responses, records): strict types, unknown fields
  refused, frozen.
- ``TaskArgsModel``: task arguments, as the applications written for Crynux send them. Types stay strict
  ("5" is not an integer, true is not a number, as in the published JSON Schemas) with one exception, an
  integral float for an integer field (a Gradio number field hands ``0.0``), and unknown fields are
  ignored, as the reference does: the taskHash covers the bytes as uploaded, so nothing is lost.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError


class StrictModel(BaseModel):
    # strict: "5" is not an int and true is not a number, as in the published JSON Schemas.
    # extra="forbid": a misspelt field is an error, not a silently ignored default.
    # frozen: validated arguments are values; nothing downstream may edit them.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TaskArgsModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


def integral(value: Any) -> Any:
    """``2.0`` -> ``2``, as JSON Schema's "integer" reads it; ``2.5`` is refused naming its fraction."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise PydanticCustomError(
            "int_from_float", "Input should be an integer, not {value}", {"value": value}
        )
    return value


# An integer field of task arguments: a JSON integer, or a number with no fractional part. Bounds go
# before it (``Annotated[int, Field(ge=1), AS_INT]``): after it, pydantic leaves them out of the JSON
# Schema of an optional field (tests/protocol/test_schema_agreement.py found it).
AS_INT = BeforeValidator(integral)
Int = Annotated[int, AS_INT]
