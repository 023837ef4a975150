"""A real Prometheus on loopback scraping a running ``healer demo``, with healer's rules loaded.

Checks through Prometheus's HTTP API what promtool cannot: that the target is
up, that ``healer_actions_total`` has data from a healer that heals, that the
rules load and evaluate without errors, and that every dashboard query parses.
It also scrapes the demo's ``/metrics`` directly: every ``healer_*`` name the
rules and the dashboard use is exported by a running healer, and no label value
names an app or an instance.

Skips without the ``prometheus`` binary; fails under CI=true (``.ci/run`` installs it).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from conftest import free_port, require_or_skip
from prometheus_client.parser import text_string_to_metric_families
from test_alerting import RULES, dashboard_queries, exported_names, used_names

pytestmark = pytest.mark.e2e

T = TypeVar("T")

#: Long enough to outlive the checks; the fixture stops the demo when they are done.
DEMO_SECONDS = 300
#: Actions need a fault, a policy's `for` and a cycle; the demo's faults come within a minute.
ACTIONS_TIMEOUT = 150.0
#: Simulated app ids look like app-0001, instance ids app-0001.3.
APP_OR_INSTANCE_ID = re.compile(r"app-\d{4}")


@dataclass
class Stack:
    healer_url: str
    prometheus_url: str
    healer: subprocess.Popen[bytes]
    healer_log: Path

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10
        )
        body: dict[str, Any] = response.json()
        return body


def wait_for(what: str, check: Callable[[], T | None], timeout: float, stack_log: Path) -> T:
    """Poll ``check`` until it returns something, or fail naming what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result is not None:
            return result
        time.sleep(1)
    pytest.fail(
        f"timed out after {timeout:.0f}s waiting for {what}; log: {stack_log.read_text()[-2000:]}"
    )


def healer_command() -> list[str]:
    venv_healer = Path(sys.executable).parent / "healer"
    if venv_healer.exists():
        return [str(venv_healer)]
    return [sys.executable, "-m", "healer.cli"]


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started: Ctrl-C first, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = shutil.which("prometheus")
    require_or_skip(
        prometheus is not None, "prometheus is not installed (Debian package prometheus)"
    )
    assert prometheus is not None
    work = tmp_path_factory.mktemp("prometheus")

    # healer demo: simulator and daemon, /metrics on a loopback port.
    healer_port = free_port()
    healer_log = work / "healer.log"
    healer = subprocess.Popen(
        [
            *healer_command(),
            "demo",
            "--duration",
            str(DEMO_SECONDS),
            "--port",
            str(healer_port),
            "--apps",
            "20",
            "--seed",
            "6",
        ],
        stdout=healer_log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    healer_url = f"http://127.0.0.1:{healer_port}"

    def metrics_up() -> bool | None:
        if healer.poll() is not None:
            pytest.fail(
                f"healer demo exited with {healer.returncode}: {healer_log.read_text()[-2000:]}"
            )
        return True if httpx.get(f"{healer_url}/metrics", timeout=2).status_code == 200 else None

    # Prometheus: scrape every second, evaluate every second, healer's rules loaded.
    prom_port = free_port()
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: healer\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{healer_port}']}}]\n"
    )
    prom_log = work / "prometheus.log"
    prom: subprocess.Popen[bytes] | None = None
    try:
        wait_for("healer's /metrics", metrics_up, 60, healer_log)
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stdout=prom_log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        prometheus_url = f"http://127.0.0.1:{prom_port}"
        wait_for(
            "Prometheus to be ready",
            lambda: (
                True
                if httpx.get(f"{prometheus_url}/-/ready", timeout=2).status_code == 200
                else None
            ),
            60,
            prom_log,
        )
        yield Stack(healer_url, prometheus_url, healer, healer_log)
    finally:
        if prom is not None:
            stop(prom)
        stop(healer)


class TestPrometheusScrapesHealer:
    def test_the_healer_target_is_up(self, stack: Stack) -> None:
        def healer_target() -> dict[str, Any] | None:
            targets = httpx.get(f"{stack.prometheus_url}/api/v1/targets", timeout=5).json()
            up = [t for t in targets["data"]["activeTargets"] if t["health"] == "up"]
            return up[0] if up else None

        target = wait_for("the healer target to be up", healer_target, 30, stack.healer_log)

        assert target["labels"]["job"] == "healer"

    def test_healer_actions_total_has_data(self, stack: Stack) -> None:
        def actions() -> list[Any] | None:
            result = stack.query("sum by (action, outcome) (healer_actions_total)")["data"][
                "result"
            ]
            return result or None

        series = wait_for("healer_actions_total", actions, ACTIONS_TIMEOUT, stack.healer_log)

        assert sum(float(s["value"][1]) for s in series) > 0

    def test_the_rules_load_and_evaluate_without_errors(self, stack: Stack) -> None:
        def evaluated() -> list[dict[str, Any]] | None:
            body = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=5).json()
            rules = [r for g in body["data"]["groups"] for r in g["rules"]]
            return rules if rules and all(r["health"] != "unknown" for r in rules) else None

        rules = wait_for("every rule to be evaluated", evaluated, 30, stack.healer_log)

        expected = RULES.read_text().count("- record:") + RULES.read_text().count("- alert:")
        assert len(rules) == expected
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    def test_every_dashboard_query_is_valid_promql(self, stack: Stack) -> None:
        substitutions = {"$__rate_interval": "1m", "$policy": ".*", "$job": ".*"}
        errors = {}
        for expr in dashboard_queries():
            if expr.startswith("label_values("):
                # Grafana's own function: check the selector inside it instead.
                expr = "count(" + expr.removeprefix("label_values(").rsplit(",", 1)[0] + ")"
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            body = stack.query(expr)
            if body["status"] != "success":
                errors[expr] = body.get("error")

        assert errors == {}


class TestTheRunningHealersMetrics:
    def test_every_name_the_rules_and_dashboard_use_is_exported(self, stack: Stack) -> None:
        exported = exported_names(httpx.get(f"{stack.healer_url}/metrics", timeout=5).text)

        missing = {where: names - exported for where, names in used_names().items()}

        assert missing == {"rules": set(), "dashboard": set()}

    def test_no_label_value_names_an_app_or_an_instance(self, stack: Stack) -> None:
        text = httpx.get(f"{stack.healer_url}/metrics", timeout=5).text

        values = {
            (sample.name, value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            for value in sample.labels.values()
        }

        assert values
        assert {(n, v) for n, v in values if APP_OR_INSTANCE_ID.search(v)} == set()
