"""The monitoring files (k8s/monitoring) read for the tests: every PromQL expression and its metric names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "k8s/monitoring"
# The PromQL functions and aggregations the files may use: a typo in one is caught here, not at 3 am.
PROMQL_FUNCTIONS = {
    "delta", "rate", "increase", "time", "sum", "max", "min", "avg", "count", "absent", "on", "min_over_time",
}  # fmt: skip


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's ``spec.groups``: a plain rules file's groups."""
    return yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())["spec"]["groups"]


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def expressions() -> dict[str, str]:
    """Every expression, by where it is: ``panel <title> <refId>`` or ``alert <name>``."""
    found = {
        f"panel {panel['title']} {target['refId']}": target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    }
    return found | {f"alert {rule['alert']}": rule["expr"] for rule in rules()}


# What Grafana puts in place of its own variables before a query reaches Prometheus.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}


def panel_queries() -> dict[str, str]:
    """Every panel query as Grafana sends it: the dashboard's template variables (its ``templating``)
    and Grafana's own (``$__rate_interval``) replaced by their values; by ``panel <title> <refId>``."""
    board = dashboard()
    values = GRAFANA_VARIABLES | {
        var["name"]: str(var.get("current", {}).get("value", "")) for var in board["templating"]["list"]
    }

    def substituted(expr: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)

    return {where: substituted(expr) for where, expr in expressions().items() if where.startswith("panel ")}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bhelium_[a-z0-9_]+", expr))


def exported_metrics(scrape: str) -> set[str]:
    """The metrics a Prometheus text exposition declares (``# TYPE`` lines), with or without samples."""
    return set(re.findall(r"^# TYPE (\S+) ", scrape, flags=re.MULTILINE))


def sampled_metrics(scrape: str) -> set[str]:
    """The metrics with at least one sample in the scrape."""
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", scrape, flags=re.MULTILINE))


def problems_with(expr: str, exported: set[str]) -> list[str]:
    """What is wrong with one expression: metrics not exported, unknown functions, unbalanced brackets."""
    found = [f"{name} is not exported" for name in sorted(metric_names(expr) - exported)]
    if not metric_names(expr):
        found.append("names no helium_ metric")
    calls = set(re.findall(r"([a-z_]+)\s*\(", expr)) - PROMQL_FUNCTIONS
    found += [f"unknown function {name}()" for name in sorted(calls)]
    for opening, closing in ("()", "[]", "{}"):
        if expr.count(opening) != expr.count(closing):
            found.append(f"unbalanced {opening}{closing}")
    return found
