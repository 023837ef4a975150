"""Alerting rules and dashboard: checked by promtool, in step with the exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_or_skip
from ruamel.yaml import YAML

from healer.observe.metrics import HealerMetrics

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "healer-rules.yaml"
RULE_TESTS = PROMETHEUS_DIR / "healer-rules.test.yaml"
RUNBOOK = PROMETHEUS_DIR / "RUNBOOK.md"
DASHBOARD = REPO / "deploy" / "grafana" / "healer.json"

#: The alerts issue 6 asks for, by the names the rules give them.
REQUIRED_ALERTS = {
    "HealerDown",
    "HealerNotScraped",
    "HealerSweepStale",
    "HealerFleetBrakeEngaged",
    "HealerAppsShortCircuited",
    "HealerActionFailureRatioHigh",
    "HealerPolicyReloadFailing",
    "HealerCloudPilotErrorRatioHigh",
    "HealerPausedTooLong",
    "HealerBudgetRefusalsSustained",
}

METRIC_NAME = re.compile(r"\bhealer_[a-z0-9_]+")


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    return exprs


def exported_names(exposition: str) -> set[str]:
    """Series names a scrape can return, from the ``# TYPE`` lines (even with no sample yet)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(" ", 3)
        if kind == "histogram":
            names |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names |= {name, name.removesuffix("_total") + "_total"}
        else:
            names.add(name)

    return names


def used_names() -> dict[str, set[str]]:
    """Every ``healer_*`` name the rules and the dashboard query, by where it is used."""
    return {
        "rules": {n for rule in rules() for n in METRIC_NAME.findall(rule["expr"])},
        "dashboard": {n for e in dashboard_queries() for n in METRIC_NAME.findall(e)},
    }


def promtool() -> str:
    path = shutil.which("promtool")
    require_or_skip(path is not None, "promtool is not installed (Debian package prometheus)")
    assert path is not None
    return path


class TestPromtool:
    def test_promtool_checks_the_rules(self) -> None:
        result = subprocess.run(
            [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(rules())} rules found" in result.stdout

    def test_promtool_unit_tests_of_the_rules_pass(self) -> None:
        result = subprocess.run(
            [promtool(), "test", "rules", RULE_TESTS.name],
            cwd=PROMETHEUS_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert result.returncode == 0, result.stdout + result.stderr

    def test_promtool_notices_a_broken_threshold(self, tmp_path: Path) -> None:
        # The unit tests can fail: the same tests against a rule with a changed threshold.
        rule = "healer:action_failures:ratio_rate15m"
        text = RULES.read_text().replace(f"{rule} > 0.25", f"{rule} > 0.6")
        assert text != RULES.read_text()
        (tmp_path / RULES.name).write_text(text)
        shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)

        result = subprocess.run(
            [promtool(), "test", "rules", RULE_TESTS.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

        assert result.returncode != 0
        assert "HealerActionFailureRatioHigh" in result.stdout + result.stderr


class TestRuleFile:
    def test_every_required_alert_is_there(self) -> None:
        assert {rule["alert"] for rule in alerts()} >= REQUIRED_ALERTS

    @pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
    def test_every_alert_has_summary_description_runbook_and_severity(self, alert: str) -> None:
        [rule] = [r for r in alerts() if r["alert"] == alert]

        assert set(rule["annotations"]) >= {"summary", "description", "runbook"}
        assert rule["labels"]["severity"] in {"critical", "warning"}

    def test_every_runbook_link_names_a_section_of_the_runbook(self) -> None:
        anchors = {
            "deploy/prometheus/RUNBOOK.md#" + line.removeprefix("## ").strip().lower()
            for line in RUNBOOK.read_text().splitlines()
            if line.startswith("## ")
        }

        assert {rule["annotations"]["runbook"] for rule in alerts()} <= anchors

    def test_every_alert_fires_and_stays_quiet_in_the_unit_tests(self) -> None:
        tests = load_yaml(RULE_TESTS)["tests"]
        cases = [case for test in tests for case in test.get("alert_rule_test", [])]

        firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
        quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}

        assert firing >= REQUIRED_ALERTS
        assert quiet >= REQUIRED_ALERTS

    def test_recording_rules_follow_the_level_metric_operations_convention(self) -> None:
        recorded = [rule["record"] for rule in rules() if "record" in rule]

        assert recorded
        assert all(re.fullmatch(r"healer:[a-z0-9_]+:[a-z0-9_]+", name) for name in recorded)


class TestMetricNames:
    def test_every_metric_the_rules_and_dashboard_use_is_exported(self) -> None:
        body, _ = HealerMetrics().render()
        exported = exported_names(body.decode())

        missing = {where: names - exported for where, names in used_names().items()}

        assert missing == {"rules": set(), "dashboard": set()}

    def test_the_check_would_notice_an_unknown_name(self) -> None:
        body, _ = HealerMetrics().render()
        exported = exported_names(body.decode())

        assert "healer_actions_total" in exported
        assert "healer_heal_duration_seconds_bucket" in exported
        assert "healer_restarts_total" not in exported
        assert "healer_instances_bucket" not in exported


class TestDashboard:
    def test_the_dashboard_has_a_policy_variable_used_by_the_action_panels(self) -> None:
        variables = {v["name"]: v for v in dashboard()["templating"]["list"]}

        assert variables["policy"]["type"] == "query"
        assert variables["policy"]["includeAll"] is True
        uses = [e for e in dashboard_queries() if 'policy=~"$policy"' in e]
        assert any("healer_actions_total" in e for e in uses)
        assert any("healer_decisions_total" in e for e in uses)
        assert any("healer_heal_duration_seconds_bucket" in e for e in uses)

    @pytest.mark.parametrize(
        ("topic", "metric"),
        [
            ("actions by outcome", "healer_actions_total"),
            ("refusals by reason", "healer_decisions_total"),
            ("heal duration", "healer_heal_duration_seconds_bucket"),
            ("instances by state", "healer_instances"),
            ("CloudPilot latency", "healer_cloudpilot_request_duration_seconds_bucket"),
            ("CloudPilot errors", "healer_cloudpilot_requests_total"),
            ("sweep duration", "healer_sweep_duration_seconds_bucket"),
            ("sweep age", "healer_last_sweep_timestamp_seconds"),
            ("fleet brake", "healer_fleet_brake_engaged"),
            ("pauses", "healer_paused"),
        ],
    )
    def test_the_dashboard_shows_what_issue_6_lists(self, topic: str, metric: str) -> None:
        assert metric in used_names()["dashboard"], topic

    def test_panel_ids_are_unique_and_every_panel_uses_the_datasource_variable(self) -> None:
        panels = dashboard()["panels"]
        ids = [p["id"] for p in panels]

        assert len(ids) == len(set(ids))
        assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard_panels())

    def test_panels_do_not_overlap(self) -> None:
        cells: set[tuple[int, int]] = set()
        for panel in dashboard()["panels"]:
            g = panel["gridPos"]
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & mine, panel["title"]
            assert g["x"] + g["w"] <= 24
            cells |= mine


class TestGeneratedFiles:
    def test_the_generated_operator_manifests_and_policy_copies_are_current(self) -> None:
        result = subprocess.run(
            [sys.executable, str(REPO / "deploy" / "generate.py"), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert result.returncode == 0, result.stderr

    def test_the_prometheus_rule_carries_exactly_the_rule_file_groups(self) -> None:
        rule = load_yaml(REPO / "deploy" / "kustomize" / "monitoring" / "prometheusrule.yaml")

        assert rule["kind"] == "PrometheusRule"
        assert rule["spec"]["groups"] == load_yaml(RULES)["groups"]
