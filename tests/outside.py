"""What a test needs from outside the clone (../shared beside it, a Debian package): a fresh clone passes
alone, so such a test is skipped where the thing is missing, saying what and how to get it; with ``CI``
set, where everything is provided, a skip would hide a broken check, so it fails instead."""

from __future__ import annotations

from typing import NoReturn

import pytest

from cluster import envs


def missing(what: str, how_to_get_it: str) -> NoReturn:
    message = f"{what} is missing: {how_to_get_it}"
    if envs.CI.get():
        pytest.fail(f"{message} (CI is set: this check must run)")
    pytest.skip(message)
