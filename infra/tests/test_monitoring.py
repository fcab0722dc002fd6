"""Checks on infra/monitoring: the alert rules and the Grafana dashboard.

promtool checks and unit-tests the rules themselves (infra/test.sh); the Rust
test `the_alert_rules_and_the_grafana_dashboard_query_only_exported_series`
checks every series name against the agent's real /metrics. Here: every alert
is unit-tested both firing and silent, carries what a receiver needs, and
every Grafana query is valid PromQL (through promtool, as recording rules).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import INFRA

MONITORING = INFRA / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
SEVERITIES = {"critical", "warning", "info"}
# What Grafana puts in place of its variables before a query runs.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$job": "vipfleet-agent"}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def fired_and_silent(tests_doc: dict) -> dict[str, set[bool]]:
    """For each alert name: whether the unit tests expect it firing, silent, or both."""
    seen: dict[str, set[bool]] = {}
    for test in tests_doc["tests"]:
        for case in test.get("alert_rule_test", []):
            seen.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    return seen


def panels(dashboard: dict) -> list[dict]:
    out, stack = [], list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        out.append(panel)
        stack.extend(panel.get("panels", []))
    return out


def grafana_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, query with Grafana's variables substituted)."""
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((panel["title"], expr))
    return out


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("CI"):
        pytest.fail("promtool is not installed (Debian package prometheus; tests/setup/packages.sh)")
    return found


# ---------------------------------------------------------------- tests


def test_every_alert_is_unit_tested_firing_and_silent():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names repeat"
    seen = fired_and_silent(yaml.safe_load(ALERT_TESTS.read_text()))
    missing = {name: sorted(seen.get(name, set())) for name in names if seen.get(name) != {True, False}}
    assert not missing, f"alerts not tested both firing (True) and silent (False): {missing}"


def test_the_coverage_rule_notices_an_alert_only_tested_firing():
    doc = {"tests": [{"alert_rule_test": [{"alertname": "A", "exp_alerts": [{"exp_labels": {}}]}]}]}
    assert fired_and_silent(doc) == {"A": {True}}


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for rule in alert_rules():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        for key in ("summary", "description"):
            assert rule.get("annotations", {}).get(key, "").strip(), f"{rule['alert']}: no {key}"


def test_the_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert 'job="$job"' in target["expr"], f"{panel['title']}: not limited to the chosen job"


def test_every_grafana_query_is_valid_promql(tmp_path: Path):
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; tests/setup/packages.sh)")
    queries = grafana_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 20
    rules = {
        "groups": [
            {
                "name": "grafana",
                "rules": [{"record": f"grafana:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "grafana_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promql_checking_catches_a_broken_query(tmp_path: Path):
    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; tests/setup/packages.sh)")
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum(rate(x[5m])"}]}]}))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode != 0
