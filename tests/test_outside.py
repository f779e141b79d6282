"""A check that needs something from outside the clone skips without it, naming it, and fails in CI."""

from __future__ import annotations

import pytest

from tests.outside import missing


def test_outside_ci_a_missing_thing_is_a_skip_that_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="promtool is missing: apt-get install prometheus"):
        missing("promtool", "apt-get install prometheus")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_with_ci_set_a_missing_thing_fails(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"promtool is missing: apt-get .*\(CI is set"):
        missing("promtool", "apt-get install prometheus")
