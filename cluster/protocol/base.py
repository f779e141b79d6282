"""The shared base of every model that crosses the network: strict types, unknown fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    # strict: "5" is not an int and true is not a number, as in the published JSON Schemas.
    # extra="forbid": a misspelt field is an error, not a silently ignored default.
    # frozen: validated arguments are values; nothing downstream may edit them.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
