"""Integers in paths, queries and form fields in one canonical form: decimal digits, no sign, no leading
zero, no space, underscore or decimal point. A signature binds the number, and the path it was made for
names it one way; ``0101``, ``+101``, ``101.0``, `` 101`` or ``1_01`` (all of which Python's and pydantic's
lenient parsing read as 101) would let one signed request be replayed under other spellings."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator

from network.relay.errors import RelayError

_CANONICAL = re.compile(r"0|[1-9][0-9]*")  # [0-9], not \d: int() also reads other scripts' digits
WHAT_IS_CANONICAL = "decimal digits without sign, leading zero, space, '_' or '.'"


def _canonical(value: object) -> object:
    if isinstance(value, str) and not _CANONICAL.fullmatch(value):
        raise ValueError(f"must be written in {WHAT_IS_CANONICAL}")
    return value


def parse_canonical_int(text: str, name: str, *, below: int) -> int:
    """A form field's integer, refused (400) unless canonical and below ``below``."""
    if not _CANONICAL.fullmatch(text) or len(text) > len(str(below)) or int(text) >= below:
        raise RelayError(400, f"{name}: must be an integer below {below} in {WHAT_IS_CANONICAL}")
    return int(text)


TaskId = Annotated[int, BeforeValidator(_canonical), Path(ge=0, lt=2**63)]
FileIndex = Annotated[int, BeforeValidator(_canonical), Path(ge=0, lt=1024)]
Timestamp = Annotated[int, BeforeValidator(_canonical), Query(ge=0, lt=2**40)]
