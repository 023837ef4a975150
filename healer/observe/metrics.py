"""Prometheus metrics: what healer did, seen from outside.

This is the last stop of the flow client → snapshot → policy → guard →
executor → ledger → metrics. The engine, the client and the HTTP layer call
the ``observe_*`` and ``set_*`` methods of one :class:`HealerMetrics`; the
HTTP server exposes :meth:`HealerMetrics.asgi_app` at ``/metrics``. Every
metric lives in the instance's own registry, so two daemons (or two tests) in
one process never share counters.

Labels are bounded on purpose: policy, action, decision, reason, outcome,
state, API call name. No instance id and no app id ever becomes a label (a
fleet of ten thousand apps would become ten thousand series per metric); who
was touched is the ledger's and the logs' business. The alerting rules and the
dashboard in ``deploy/`` use these names, and a test keeps them in step.

Label values the rules depend on:

- ``healer_cloudpilot_requests_total{outcome}``: ``ok`` is success; any other
  value (``timeout``, ``http_5xx``, ``http_4xx``, ``transport``, ``invalid``,
  ...) is an error.
- ``healer_actions_total{outcome}``: the per-instance answer of the action
  call, one of :data:`ACTION_OUTCOMES`.
- ``healer_verifications_total{outcome}``: what verification found later,
  one of :data:`VERIFY_OUTCOMES`.
- ``healer_decisions_total{decision}``: one of :data:`DECISIONS`; ``reason``
  is a guard reason code for ``refused`` and ``none`` otherwise.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from healer import __version__
from healer.cloudpilot.models import KNOWN_STATES

# ``*_created`` series double the series count and no rule or panel reads them.
# The switch is process-wide; healer owns its process.
disable_created_metrics()

#: Per-instance answers of an action call: in ``success_instances``, in
#: ``failed_instances``, in neither (``unknown``), or the call itself failed.
ACTION_OUTCOMES: tuple[str, ...] = ("success", "failed", "unknown", "error")

#: What verification found once the verify window closed or the instance healed.
VERIFY_OUTCOMES: tuple[str, ...] = ("healed", "not_healed")

#: Guard decisions; ``dry_run`` is a decision a dry-run policy makes, not a refusal.
DECISIONS: tuple[str, ...] = ("approved", "refused", "dry_run")

#: Cycle results: ``ok`` (complete), ``skipped`` (incomplete snapshot), ``error``.
CYCLE_RESULTS: tuple[str, ...] = ("ok", "skipped", "error")

#: The ``reason`` label of a decision that is not a refusal.
NO_REASON = "none"

#: The ``state`` label of instances in a state healer does not know.
OTHER_STATE = "OTHER"

# A sweep is one pass over every enrolled app: sub-second for a handful, minutes for 10,000.
SWEEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# One CloudPilot call on a loopback simulator takes milliseconds, on a slow API seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Fault seen to healed: a restart heals in tens of seconds, a migration in tens of minutes.
HEAL_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600)


class HealerMetrics:
    """Every ``healer_*`` metric, in a registry of its own.

    Args:
        registry: where to register; a fresh :class:`CollectorRegistry` by default.
        version: the ``version`` label of ``healer_build_info``.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, version: str = __version__
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        # Sweeps and cycles: is healer keeping up?
        self.sweep_duration = Histogram(
            "healer_sweep_duration_seconds",
            "Seconds one sweep over every enrolled app took.",
            buckets=SWEEP_BUCKETS,
            registry=r,
        )
        self.last_sweep = Gauge(
            "healer_last_sweep_timestamp_seconds",
            "Unix time the last complete sweep ended; 0 before the first.",
            registry=r,
        )
        self.poll_interval = Gauge(
            "healer_poll_interval_seconds",
            "The configured poll interval: one sweep is expected per interval.",
            registry=r,
        )
        self.cycles = Counter(
            "healer_cycles_total",
            "Per-app cycles by result (ok, skipped for an incomplete snapshot, error).",
            ["result"],
            registry=r,
        )

        # CloudPilot: is the API answering?
        self.requests = Counter(
            "healer_cloudpilot_requests_total",
            "CloudPilot API calls by call name and outcome (ok, or an error kind).",
            ["call", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "healer_cloudpilot_request_duration_seconds",
            "Seconds one CloudPilot API call took, whatever its outcome.",
            ["call"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )

        # Decisions, actions and their results.
        self.decisions = Counter(
            "healer_decisions_total",
            "Guard decisions on proposals, with the refusal reason ('none' when not refused).",
            ["policy", "action", "decision", "reason"],
            registry=r,
        )
        self.actions = Counter(
            "healer_actions_total",
            "Per-instance answers of action calls sent to CloudPilot.",
            ["policy", "action", "outcome"],
            registry=r,
        )
        self.verifications = Counter(
            "healer_verifications_total",
            "Verification results of actions: healed or not_healed.",
            ["policy", "action", "outcome"],
            registry=r,
        )
        self.heal_duration = Histogram(
            "healer_heal_duration_seconds",
            "Seconds from the fault first seen to the instance verified healed.",
            ["policy", "action"],
            buckets=HEAL_BUCKETS,
            registry=r,
        )

        # The fleet as the last sweep saw it.
        self.instances = Gauge(
            "healer_instances",
            "Instances of enrolled apps by CloudPilot state, as of the last sweep.",
            ["state"],
            registry=r,
        )
        self.apps_enrolled = Gauge("healer_apps_enrolled", "Apps healer is watching.", registry=r)
        self.apps_unhealthy = Gauge(
            "healer_apps_unhealthy",
            "Enrolled apps with at least one unhealthy instance, as of the last sweep.",
            registry=r,
        )

        # Brakes and switches.
        self.apps_short_circuited = Gauge(
            "healer_apps_short_circuited",
            "Apps whose disruptive actions are stopped by the short circuit.",
            registry=r,
        )
        self.fleet_brake = Gauge(
            "healer_fleet_brake_engaged",
            "1 while the fleet brake stops disruptive actions everywhere, else 0.",
            registry=r,
        )
        self.paused = Gauge(
            "healer_paused",
            "Active pauses: scope=global is 0 or 1, scope=app counts paused apps.",
            ["scope"],
            registry=r,
        )
        self.pause_oldest = Gauge(
            "healer_pause_oldest_timestamp_seconds",
            "Unix time the oldest active pause of the scope began; 0 when none is active.",
            ["scope"],
            registry=r,
        )

        # Policies.
        self.policies_loaded = Gauge(
            "healer_policies_loaded", "Policies in the set currently in force.", registry=r
        )
        self.policy_reload_errors = Counter(
            "healer_policy_reload_errors_total",
            "Policy reloads that failed; the last good set stayed in force.",
            registry=r,
        )
        self.policy_reload_ok = Gauge(
            "healer_policy_last_reload_successful",
            "1 when the last policy (re)load succeeded, 0 when it failed.",
            registry=r,
        )
        self.policy_reload_success_time = Gauge(
            "healer_policy_last_reload_success_timestamp_seconds",
            "Unix time of the last successful policy load.",
            registry=r,
        )

        self.build_info = Gauge(
            "healer_build_info",
            "Always 1; the labels say which healer is running.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version=version, python=platform.python_version()).set(1)

        # Series the alerts compare against exist from the start, at zero.
        for scope in ("global", "app"):
            self.paused.labels(scope=scope).set(0)
            self.pause_oldest.labels(scope=scope).set(0)
        for state in KNOWN_STATES:
            self.instances.labels(state=state).set(0)
        for result in CYCLE_RESULTS:
            self.cycles.labels(result=result)
        self.policy_reload_ok.set(1)
        self._states_seen: set[str] = set(KNOWN_STATES)

    # -- the CloudPilot client -------------------------------------------------

    def observe_request(self, call: str, outcome: str, seconds: float) -> None:
        """One CloudPilot API call; matches the client's ``on_request`` callback."""
        self.requests.labels(call=call, outcome=outcome).inc()
        self.request_duration.labels(call=call).observe(seconds)

    # -- the engine ------------------------------------------------------------

    def observe_cycle(self, result: str) -> None:
        """One per-app cycle ended with ``result`` (one of :data:`CYCLE_RESULTS`)."""
        _check("result", result, CYCLE_RESULTS)
        self.cycles.labels(result=result).inc()

    def observe_sweep(self, seconds: float, ended_at: float | None = None) -> None:
        """A complete sweep over every enrolled app took ``seconds`` and ended at ``ended_at``."""
        self.sweep_duration.observe(seconds)
        self.last_sweep.set(time.time() if ended_at is None else ended_at)

    def observe_decision(
        self, policy: str, action: str, decision: str, reason: str | None = None
    ) -> None:
        """One guard decision; ``reason`` is the refusal reason code, absent otherwise."""
        _check("decision", decision, DECISIONS)
        if decision == "refused" and not reason:
            raise ValueError("a refused decision needs its reason code")
        self.decisions.labels(
            policy=policy, action=action, decision=decision, reason=reason or NO_REASON
        ).inc()

    def observe_action(self, policy: str, action: str, outcome: str, count: int = 1) -> None:
        """``count`` instances answered ``outcome`` (one of :data:`ACTION_OUTCOMES`)."""
        _check("outcome", outcome, ACTION_OUTCOMES)
        self.actions.labels(policy=policy, action=action, outcome=outcome).inc(count)

    def observe_verification(
        self, policy: str, action: str, outcome: str, heal_seconds: float | None = None
    ) -> None:
        """Verification settled; a ``healed`` outcome may carry fault-seen-to-healed seconds."""
        _check("outcome", outcome, VERIFY_OUTCOMES)
        self.verifications.labels(policy=policy, action=action, outcome=outcome).inc()
        if outcome == "healed" and heal_seconds is not None:
            self.observe_heal(policy, action, heal_seconds)

    def observe_heal(self, policy: str, action: str, seconds: float) -> None:
        """An instance was verified healed ``seconds`` after its fault was first seen."""
        self.heal_duration.labels(policy=policy, action=action).observe(seconds)

    def set_instances(self, counts: Mapping[str, int]) -> None:
        """Instances by state across enrolled apps; states not in ``counts`` go to 0.

        A state CloudPilot reports that healer does not know is counted as
        ``OTHER``: label values come from a fixed set, never from remote data.
        """
        folded: dict[str, int] = {}
        for state, n in counts.items():
            label = state if state in KNOWN_STATES else OTHER_STATE
            folded[label] = folded.get(label, 0) + n
        for state in self._states_seen - set(folded):
            self.instances.labels(state=state).set(0)
        for state, n in folded.items():
            self.instances.labels(state=state).set(n)
        self._states_seen |= set(folded)

    def set_fleet(
        self,
        *,
        enrolled: int,
        unhealthy: int | None = None,
        short_circuited: int | None = None,
        fleet_brake: bool | None = None,
    ) -> None:
        """The fleet as one sweep saw it; ``None`` leaves a value as it was."""
        self.apps_enrolled.set(enrolled)
        if unhealthy is not None:
            self.apps_unhealthy.set(unhealthy)
        if short_circuited is not None:
            self.apps_short_circuited.set(short_circuited)
        if fleet_brake is not None:
            self.fleet_brake.set(1 if fleet_brake else 0)

    def set_fleet_brake(self, engaged: bool) -> None:
        """The fleet brake engaged (True) or released (False)."""
        self.fleet_brake.set(1 if engaged else 0)

    def set_pauses(self, global_since: float | None, app_since: Iterable[float] = ()) -> None:
        """Active pauses: the global one's start time (or None), and each paused app's."""
        starts = list(app_since)
        self.paused.labels(scope="global").set(0 if global_since is None else 1)
        self.pause_oldest.labels(scope="global").set(global_since or 0)
        self.paused.labels(scope="app").set(len(starts))
        self.pause_oldest.labels(scope="app").set(min(starts) if starts else 0)

    def set_poll_interval(self, seconds: float) -> None:
        """The configured poll interval, which the staleness alert measures sweeps against."""
        self.poll_interval.set(seconds)

    # -- policy loading --------------------------------------------------------

    def observe_policy_load(self, ok: bool, loaded: int | None = None) -> None:
        """A policy (re)load: on success ``loaded`` is the size of the new set."""
        if ok:
            self.policy_reload_ok.set(1)
            self.policy_reload_success_time.set(time.time())
            if loaded is not None:
                self.policies_loaded.set(loaded)
        else:
            self.policy_reload_ok.set(0)
            self.policy_reload_errors.inc()

    # -- exposition ------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def asgi_app(self) -> Any:
        """An ASGI app serving this registry (mount it at ``/metrics``)."""
        return make_asgi_app(registry=self.registry)


def _check(label: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse a label value outside the documented set: the alerting rules match on them."""
    if value not in allowed:
        message = f"{label}={value!r} is not one of {', '.join(allowed)}"
        raise ValueError(message)
