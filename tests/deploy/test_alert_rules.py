"""The alert rules through Prometheus's own tool: ``promtool check rules`` loads them, and ``promtool test
rules`` runs tests/deploy/alert_rules_test.yaml, in which every alert fires on the series that should
fire it, with the labels and text the operator reads, and stays quiet otherwise."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.deploy import monitoring
from tests.deploy.prometheus import binary, write_rules_file

UNIT_TESTS = Path(__file__).with_name("alert_rules_test.yaml")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_loads_every_rule(tmp_path):
    rules = write_rules_file(tmp_path / "helium-rules.yaml")
    checked = promtool("check", "rules", rules.name, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(monitoring.rules())} rules found" in checked.stdout


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    alerts = {rule["alert"] for rule in monitoring.rules()}
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == alerts
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == alerts


def test_the_alerts_fire_as_their_unit_tests_say(tmp_path):
    write_rules_file(tmp_path / "helium-rules.yaml")  # the file the unit tests name, beside them
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    tested = promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
