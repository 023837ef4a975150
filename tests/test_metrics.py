"""HealerMetrics: every metric of issue 5, bounded labels, and a readable exposition."""

from __future__ import annotations

import inspect
import platform

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from healer import __version__
from healer.observe.metrics import HealerMetrics

#: From issue 5 ("Metrics, logs, HTTP") and what the alerting rules need, by type.
DOCUMENTED = {
    "healer_sweep_duration_seconds": "histogram",
    "healer_last_sweep_timestamp_seconds": "gauge",
    "healer_poll_interval_seconds": "gauge",
    "healer_cycles": "counter",
    "healer_cloudpilot_requests": "counter",
    "healer_cloudpilot_request_duration_seconds": "histogram",
    "healer_decisions": "counter",
    "healer_actions": "counter",
    "healer_verifications": "counter",
    "healer_heal_duration_seconds": "histogram",
    "healer_instances": "gauge",
    "healer_apps_enrolled": "gauge",
    "healer_apps_unhealthy": "gauge",
    "healer_apps_short_circuited": "gauge",
    "healer_fleet_brake_engaged": "gauge",
    "healer_paused": "gauge",
    "healer_pause_oldest_timestamp_seconds": "gauge",
    "healer_policies_loaded": "gauge",
    "healer_policy_reload_errors": "counter",
    "healer_policy_last_reload_successful": "gauge",
    "healer_policy_last_reload_success_timestamp_seconds": "gauge",
    "healer_build_info": "gauge",
}

#: Label names that would carry one series per app or instance.
UNBOUNDED_LABELS = {"instance", "instance_id", "app", "app_id", "host", "host_ip", "port"}


def families(metrics: HealerMetrics) -> dict[str, str]:
    body, _ = metrics.render()
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


def value(metrics: HealerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def exercise(metrics: HealerMetrics) -> None:
    """Every method once, with values as the engine would pass them."""
    metrics.observe_request("instance_status", "ok", 0.012)
    metrics.observe_request("instance_info", "timeout", 5.0)
    metrics.observe_cycle("ok")
    metrics.observe_sweep(1.5, ended_at=1_000.0)
    metrics.observe_decision("restart-unknown", "restart", "approved")
    metrics.observe_decision("migrate-agent-down", "migrate", "refused", "budget")
    metrics.observe_action("restart-unknown", "restart", "success")
    metrics.observe_verification("restart-unknown", "restart", "healed", heal_seconds=95.0)
    metrics.set_instances({"RUNNING": 40, "UNKNOWN": 2})
    metrics.set_fleet(enrolled=10, unhealthy=2, short_circuited=1, fleet_brake=False)
    metrics.set_pauses(global_since=None, app_since=[900.0])
    metrics.set_poll_interval(30)
    metrics.observe_policy_load(True, loaded=4)


class TestWhatIsExported:
    def test_a_fresh_instance_exports_every_documented_metric_with_its_type(self) -> None:
        exported = families(HealerMetrics())

        assert {name: exported.get(name) for name in DOCUMENTED} == DOCUMENTED

    def test_build_info_names_the_version_and_python(self) -> None:
        metrics = HealerMetrics()

        labels = {"version": __version__, "python": platform.python_version()}
        assert value(metrics, "healer_build_info", **labels) == 1

    def test_render_gives_the_text_format_content_type(self) -> None:
        body, content_type = HealerMetrics().render()

        assert content_type.startswith("text/plain; version=")
        assert b"# TYPE healer_actions_total counter" in body

    def test_no_created_series_are_exported(self) -> None:
        metrics = HealerMetrics()
        exercise(metrics)

        body, _ = metrics.render()

        assert b"_created" not in body

    async def test_the_asgi_app_serves_the_exposition(self) -> None:
        metrics = HealerMetrics()
        metrics.observe_action("restart-unknown", "restart", "failed", count=3)
        transport = httpx.ASGITransport(app=metrics.asgi_app())

        async with httpx.AsyncClient(transport=transport, base_url="http://healer") as client:
            response = await client.get("/")

        assert response.status_code == 200
        line = (
            'healer_actions_total{action="restart",outcome="failed",policy="restart-unknown"} 3.0'
        )
        assert line in response.text


class TestRegistries:
    def test_two_instances_do_not_share_counters(self) -> None:
        first, second = HealerMetrics(), HealerMetrics()

        first.observe_cycle("ok")

        assert value(first, "healer_cycles_total", result="ok") == 1
        assert value(second, "healer_cycles_total", result="ok") == 0


class TestLabelsAreBounded:
    def test_no_label_names_an_app_or_instance(self) -> None:
        metrics = HealerMetrics()
        exercise(metrics)

        body, _ = metrics.render()
        names = {
            label
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            for label in sample.labels
        }

        assert names & UNBOUNDED_LABELS == set()

    def test_no_method_takes_an_app_or_instance_so_none_can_reach_a_label(self) -> None:
        # The values after a real run are checked against the demo's /metrics
        # (test_alerting_prometheus.py); here, the API itself leaves no way in.
        methods = [
            getattr(HealerMetrics, name)
            for name in dir(HealerMetrics)
            if name.startswith(("observe_", "set_"))
        ]

        params = {p for m in methods for p in inspect.signature(m).parameters}

        assert len(methods) >= 10
        assert params & UNBOUNDED_LABELS == set()


class TestCloudPilotRequests:
    def test_requests_count_by_call_and_outcome_and_time_every_call(self) -> None:
        metrics = HealerMetrics()

        metrics.observe_request("instance_status", "ok", 0.02)
        metrics.observe_request("instance_status", "ok", 0.02)
        metrics.observe_request("instance_status", "timeout", 5.0)

        ok = value(
            metrics, "healer_cloudpilot_requests_total", call="instance_status", outcome="ok"
        )
        timeouts = value(
            metrics, "healer_cloudpilot_requests_total", call="instance_status", outcome="timeout"
        )
        assert (ok, timeouts) == (2, 1)
        name = "healer_cloudpilot_request_duration_seconds"
        assert value(metrics, f"{name}_count", call="instance_status") == 3
        assert value(metrics, f"{name}_sum", call="instance_status") == pytest.approx(5.04)
        # 0.02 s falls in the 0.025 bucket, 5 s only from the 5 s bucket on.
        assert value(metrics, f"{name}_bucket", call="instance_status", le="0.025") == 2
        assert value(metrics, f"{name}_bucket", call="instance_status", le="2.5") == 2
        assert value(metrics, f"{name}_bucket", call="instance_status", le="5.0") == 3


class TestDecisionsAndActions:
    def test_a_refused_decision_carries_its_reason_and_others_carry_none(self) -> None:
        metrics = HealerMetrics()

        metrics.observe_decision("migrate-agent-down", "migrate", "refused", "budget")
        metrics.observe_decision("restart-unknown", "restart", "approved")
        metrics.observe_decision("restart-unknown", "restart", "dry_run")

        refused = value(
            metrics,
            "healer_decisions_total",
            policy="migrate-agent-down",
            action="migrate",
            decision="refused",
            reason="budget",
        )
        approved = value(
            metrics,
            "healer_decisions_total",
            policy="restart-unknown",
            action="restart",
            decision="approved",
            reason="none",
        )
        assert (refused, approved) == (1, 1)

    def test_a_refusal_without_a_reason_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="reason"):
            HealerMetrics().observe_decision("restart-unknown", "restart", "refused")

    @pytest.mark.parametrize(
        ("method", "args"),
        [
            ("observe_decision", ("p", "restart", "maybe")),
            ("observe_action", ("p", "restart", "healed")),
            ("observe_verification", ("p", "restart", "success")),
            ("observe_cycle", ("fine",)),
        ],
    )
    def test_an_undocumented_label_value_is_refused(
        self, method: str, args: tuple[str, ...]
    ) -> None:
        with pytest.raises(ValueError, match="is not one of"):
            getattr(HealerMetrics(), method)(*args)

    def test_actions_count_instances_by_outcome(self) -> None:
        metrics = HealerMetrics()

        metrics.observe_action("restart-unknown", "restart", "success", count=2)
        metrics.observe_action("restart-unknown", "restart", "unknown")

        labels = {"policy": "restart-unknown", "action": "restart"}
        assert value(metrics, "healer_actions_total", **labels, outcome="success") == 2
        assert value(metrics, "healer_actions_total", **labels, outcome="unknown") == 1

    def test_a_healed_verification_records_the_heal_duration(self) -> None:
        metrics = HealerMetrics()

        metrics.observe_verification("migrate-agent-down", "migrate", "healed", heal_seconds=1500)
        metrics.observe_verification("migrate-agent-down", "migrate", "not_healed")

        labels = {"policy": "migrate-agent-down", "action": "migrate"}
        assert value(metrics, "healer_verifications_total", **labels, outcome="healed") == 1
        assert value(metrics, "healer_verifications_total", **labels, outcome="not_healed") == 1
        # 1500 s is above the 1200 s bucket and within the 1800 s one; only one heal counted.
        assert value(metrics, "healer_heal_duration_seconds_bucket", **labels, le="1200.0") == 0
        assert value(metrics, "healer_heal_duration_seconds_bucket", **labels, le="1800.0") == 1
        assert value(metrics, "healer_heal_duration_seconds_count", **labels) == 1

    def test_heal_buckets_reach_an_hour(self) -> None:
        metrics = HealerMetrics()

        metrics.observe_heal("migrate-agent-down", "migrate", 3500)

        labels = {"policy": "migrate-agent-down", "action": "migrate"}
        assert value(metrics, "healer_heal_duration_seconds_bucket", **labels, le="2700.0") == 0
        assert value(metrics, "healer_heal_duration_seconds_bucket", **labels, le="3600.0") == 1


class TestFleetState:
    def test_every_known_state_starts_at_zero(self) -> None:
        metrics = HealerMetrics()

        assert value(metrics, "healer_instances", state="UNKNOWN") == 0
        assert value(metrics, "healer_instances", state="DESTORY") == 0

    def test_a_state_no_longer_seen_drops_to_zero(self) -> None:
        metrics = HealerMetrics()

        metrics.set_instances({"RUNNING": 5, "UNKNOWN": 1})
        metrics.set_instances({"RUNNING": 4})

        assert value(metrics, "healer_instances", state="RUNNING") == 4
        assert value(metrics, "healer_instances", state="UNKNOWN") == 0

    def test_states_healer_does_not_know_are_counted_as_other_never_as_their_own_label(
        self,
    ) -> None:
        # A label value from remote data would let CloudPilot grow the series without bound.
        metrics = HealerMetrics()

        metrics.set_instances({"RUNNING": 5, "REBOOTING": 2, "weird-42": 1})
        first = value(metrics, "healer_instances", state="OTHER")
        metrics.set_instances({"RUNNING": 5})

        assert first == 3
        assert value(metrics, "healer_instances", state="OTHER") == 0
        exposed = metrics.render()[0].decode()
        assert "REBOOTING" not in exposed and "weird-42" not in exposed

    def test_fleet_values_left_out_keep_their_last_value(self) -> None:
        metrics = HealerMetrics()

        metrics.set_fleet(enrolled=20, unhealthy=5, short_circuited=2, fleet_brake=True)
        metrics.set_fleet(enrolled=21)

        assert value(metrics, "healer_apps_enrolled") == 21
        assert value(metrics, "healer_apps_unhealthy") == 5
        assert value(metrics, "healer_apps_short_circuited") == 2
        assert value(metrics, "healer_fleet_brake_engaged") == 1

    def test_the_fleet_brake_releases(self) -> None:
        metrics = HealerMetrics()

        metrics.set_fleet_brake(True)
        metrics.set_fleet_brake(False)

        assert value(metrics, "healer_fleet_brake_engaged") == 0


class TestPauses:
    def test_pauses_count_by_scope_and_keep_the_oldest_start(self) -> None:
        metrics = HealerMetrics()

        metrics.set_pauses(global_since=1_000.0, app_since=[500.0, 300.0, 700.0])

        assert value(metrics, "healer_paused", scope="global") == 1
        assert value(metrics, "healer_paused", scope="app") == 3
        assert value(metrics, "healer_pause_oldest_timestamp_seconds", scope="global") == 1_000
        assert value(metrics, "healer_pause_oldest_timestamp_seconds", scope="app") == 300

    def test_resuming_everything_zeroes_both_scopes(self) -> None:
        metrics = HealerMetrics()
        metrics.set_pauses(global_since=1_000.0, app_since=[500.0])

        metrics.set_pauses(global_since=None)

        for scope in ("global", "app"):
            assert value(metrics, "healer_paused", scope=scope) == 0
            assert value(metrics, "healer_pause_oldest_timestamp_seconds", scope=scope) == 0


class TestSweepsAndPolicies:
    def test_a_sweep_records_its_duration_and_end(self) -> None:
        metrics = HealerMetrics()

        metrics.observe_sweep(12.0, ended_at=1_700_000_000.0)

        assert value(metrics, "healer_last_sweep_timestamp_seconds") == 1_700_000_000
        assert value(metrics, "healer_sweep_duration_seconds_bucket", le="10.0") == 0
        assert value(metrics, "healer_sweep_duration_seconds_bucket", le="30.0") == 1

    def test_a_failed_reload_keeps_the_loaded_count_and_says_so(self) -> None:
        metrics = HealerMetrics()
        metrics.observe_policy_load(True, loaded=4)

        metrics.observe_policy_load(False)

        assert value(metrics, "healer_policies_loaded") == 4
        assert value(metrics, "healer_policy_last_reload_successful") == 0
        assert value(metrics, "healer_policy_reload_errors_total") == 1
        assert (value(metrics, "healer_policy_last_reload_success_timestamp_seconds") or 0) > 0

    def test_a_good_reload_after_a_failure_clears_the_flag(self) -> None:
        metrics = HealerMetrics()
        metrics.observe_policy_load(False)

        metrics.observe_policy_load(True, loaded=3)

        assert value(metrics, "healer_policy_last_reload_successful") == 1
        assert value(metrics, "healer_policies_loaded") == 3
        assert value(metrics, "healer_policy_reload_errors_total") == 1
