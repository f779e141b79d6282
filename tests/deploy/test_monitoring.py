"""k8s/monitoring: the Grafana dashboard imports, the alert rules hold what operators asked for, and every
expression names a metric the coordinator exports (its registry here; tests/devnet scrapes a live one)."""

from __future__ import annotations

from prometheus_client import generate_latest

from cluster.coordinator.metrics import FarmMetrics
from tests.deploy import monitoring
from tests.deploy.manifests import render

REQUIRED_ALERTS = {  # issue 16: slashed or kicked out, a card paused, a worker down, a download, no tasks
    "HeliumNodeSlashed", "HeliumNodeOutOfNetwork", "HeliumCardModelPaused", "HeliumWorkerDown",
    "HeliumModelDownloadFailed", "HeliumNoTasks",
    "HeliumMachineLost",  # issue 26: a machine of the farm lost
}  # fmt: skip


def test_the_dashboard_is_an_importable_grafana_dashboard():
    dashboard = monitoring.dashboard()
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    # importable anywhere: the data source is asked for at import, not a uid of our Grafana
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_the_alert_rules_cover_what_operators_asked_for():
    rules = monitoring.rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_expression_names_a_metric_the_coordinator_exports():
    exported = monitoring.exported_metrics(generate_latest(FarmMetrics().registry).decode())
    problems = {
        where: p
        for where, expr in monitoring.expressions().items()
        if (p := monitoring.problems_with(expr, exported))
    }
    assert not problems


def test_every_panel_query_reaches_prometheus_with_its_variables_replaced():
    queries = monitoring.panel_queries()
    assert len(queries) == sum(len(p.get("targets", [])) for p in monitoring.dashboard()["panels"])
    assert not [expr for expr in queries.values() if "$" in expr]  # a variable Grafana would not know


def test_a_misspelt_metric_or_function_is_caught():
    exported = {"helium_nodes"}
    assert monitoring.problems_with("helium_node > 0", exported) == ["helium_node is not exported"]
    assert monitoring.problems_with("delt(helium_nodes[5m])", exported) == ["unknown function delt()"]
    assert monitoring.problems_with("sum(helium_nodes", exported) == ["unbalanced ()"]


def test_the_service_monitor_selects_the_metrics_service():
    (monitor,) = [d for d in render("monitoring") if d["kind"] == "ServiceMonitor"]
    (service,) = [d for d in render("base") if d["kind"] == "Service" and "metrics" in d["metadata"]["name"]]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    (dashboards,) = [d for d in render("monitoring") if d["kind"] == "ConfigMap"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
