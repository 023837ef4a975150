"""The simulator's engine: a fleet that moves over time, faults, and the auditor.

``Simulator`` is CloudPilot without HTTP: query payloads are built from the
true state, actions start operations that the clock finishes, faults arrive
on a seeded schedule or on demand, and every action passes the auditor. The
HTTP layer (``server.py``) is a thin shell around it; tests may use either.

Time only moves when someone looks: each request (or an explicit ``tick``)
reads the clock and plays every operation and scheduled fault that fell due
since, in time order. With a ``ManualClock`` a test drives time without
sleeping; the default clock is the wall clock.
"""

from __future__ import annotations

import copy
import functools
import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from healer.cloudpilot.models import KNOWN_STATES, Action
from healer.simulator.auditor import DISRUPTIVE, Auditor, instance_guard_kinds
from healer.simulator.fleet import (
    AGENT_DOWN,
    CONTAINER_DOWN,
    HEALTHY,
    PROC_DOWN,
    Operation,
    SimApp,
    SimInstance,
    generate_fleet,
    host_for,
    new_instance,
)

log = structlog.get_logger("healer.simulator")

Clock = Callable[[], float]

#: Instance fault kinds, and the cluster-wide one.
INSTANCE_FAULTS: tuple[str, ...] = (
    "unknown",
    "invalid_state",
    "agent_down",
    "process_down",
    "container_down",
    "frozen",
)
FAULT_KINDS: tuple[str, ...] = (*INSTANCE_FAULTS, "cluster_outage")

#: The monitoring event each fault raises (a frozen instance raises none).
FAULT_EVENTS: dict[str, tuple[str, str]] = {
    "unknown": ("instance_unknown", "critical"),
    "invalid_state": ("instance_invalid", "critical"),
    "agent_down": ("agent_down", "warning"),
    "process_down": ("proc_dead", "critical"),
    "container_down": ("container_dead", "critical"),
    "cluster_outage": ("instance_unknown", "critical"),
}

#: Fields an operation may change, saved so that ``interrupt`` can restore them.
_RESTORED = (
    "state",
    "proc_state",
    "container_state",
    "pass_agent_state",
    "under_repair",
    "migrating",
)


class ManualClock:
    """A clock that moves only when told to: for tests that must not sleep."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Durations:
    """How long each operation takes at speed 1, in seconds."""

    restart: float = 3.0
    stop: float = 2.0
    start: float = 2.0
    migrate: float = 8.0
    delete: float = 2.0
    repair: float = 10.0
    deploy: float = 5.0
    #: Range of the remaining time of repairs and migrations the fleet starts with.
    preexisting: tuple[float, float] = (30.0, 120.0)


@dataclass
class SimSettings:
    """Everything about the simulator that is not the fleet itself."""

    #: Names listed per state in ``status_instance_top_five`` (the API lists five).
    top_n: int = 5
    #: Wrap answers in ``{code, message, data}``.
    envelope: bool = False
    #: When set, CloudPilot calls must carry it in ``auth_header``.
    token: str | None = field(default=None, repr=False)
    auth_header: str = "Authorization"
    #: Put before the token with a space; empty expects the token alone.
    auth_scheme: str = "Bearer"
    #: Chance that a restart ends in UNKNOWN instead of RUNNING.
    restart_fail_prob: float = 0.0
    #: Scheduled faults per app per minute (wall-clock minutes; not scaled by speed).
    fault_rate: float = 0.0
    #: Relative weight of each kind in the scheduled faults.
    fault_mix: dict[str, float] = field(
        default_factory=lambda: {
            "unknown": 35.0,
            "process_down": 20.0,
            "agent_down": 20.0,
            "container_down": 10.0,
            "invalid_state": 5.0,
            "frozen": 5.0,
            "cluster_outage": 0.0,
        }
    )
    #: Operation durations are divided by this.
    speed: float = 1.0
    durations: Durations = field(default_factory=Durations)
    #: Share of scheduled fault events that name their instance only by address.
    addr_only_event_ratio: float = 0.3
    #: A deleted instance is replaced by a new one while the app is below its replica.
    replace_deleted: bool = True
    #: How long resolved events stay in the event list, in seconds.
    event_retention: float = 600.0
    #: When set, an action whose ``X-Healer-Replica`` names another replica is ``not_leader``.
    leader: str | None = None


class ApiFaults(BaseModel):
    """Faults of the API itself, set through ``PUT /sim/api-faults``; rates are 0–1."""

    model_config = ConfigDict(extra="forbid")

    #: Share of calls answered with ``error_status`` and an HTML page, not executed.
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)
    #: Share of calls that hang for ``hang`` seconds before answering (actions still run).
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    hang: float = Field(default=30.0, ge=0)
    #: Seconds added to every call.
    latency: float = Field(default=0.0, ge=0)
    #: Share of calls answered 200 with a truncated JSON body (actions still run).
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    #: Share of calls answered 200 with an envelope whose code is not 0 (not executed).
    envelope_error_rate: float = Field(default=0.0, ge=0, le=1)
    #: Share of instances in an action that fail without being touched.
    partial_failure_rate: float = Field(default=0.0, ge=0, le=1)
    #: Only calls whose path starts with one of these are hit; none means every call.
    paths: list[str] | None = None

    def applies_to(self, path: str) -> bool:
        return self.paths is None or any(path.startswith(p) for p in self.paths)

    def any_active(self) -> bool:
        return bool(
            self.error_rate
            or self.timeout_rate
            or self.latency
            or self.malformed_rate
            or self.envelope_error_rate
        )


@dataclass(frozen=True)
class ScriptedFault:
    """A fault a scenario schedules at ``at`` seconds after the start."""

    at: float
    kind: str
    app_id: str | None = None
    instance_id: str | None = None
    cluster: str | None = None


class UnknownApp(LookupError):
    """The app id names no app in the fleet."""


class FaultError(ValueError):
    """A fault request that cannot be carried out (unknown kind or target)."""


def _twin(app: SimApp) -> SimApp:
    """A copy of ``app`` whose instances and disabled list can change without touching it."""
    twin = copy.copy(app)
    twin.instances = {iid: copy.copy(inst) for iid, inst in app.instances.items()}
    twin.disabled = set(app.disabled)
    return twin


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Simulator:
    """A simulated CloudPilot fleet; see the module docstring."""

    def __init__(
        self,
        apps: dict[str, SimApp],
        *,
        seed: int = 0,
        settings: SimSettings | None = None,
        clock: Clock | None = None,
        scripted_faults: Iterable[ScriptedFault] = (),
    ) -> None:
        self.apps = apps
        self.seed = seed
        self.settings = settings or SimSettings()
        self.clock: Clock = clock or time.time
        self.api_faults = ApiFaults()
        self.auditor = Auditor()
        self.lock = threading.RLock()

        # Separate streams, so that the fault schedule does not depend on what the healer does.
        self._rng = random.Random(f"{seed}:actions")
        self._fault_rng = random.Random(f"{seed}:faults")
        self.api_rng = random.Random(f"{seed}:api")

        self.started = self.clock()
        self.now = self.started
        self._heap: list[tuple[float, int, str, str, int]] = []
        self._seq = itertools.count()
        self._op_ids = itertools.count(1)
        self._event_ids = itertools.count(1)
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._firing: dict[str, list[dict[str, Any]]] = {}
        self._app_order = list(apps)
        self._by_addr: dict[tuple[str, int], tuple[str, str]] = {}
        for app in apps.values():
            for inst in app.instances.values():
                self._by_addr[(inst.host_ip, inst.main_port)] = (app.app_id, inst.instance_id)
        self._scripted = sorted(scripted_faults, key=lambda f: f.at)
        self._next_fault_at = self._draw_fault_gap(self.started)

        # Repairs and migrations the fleet starts with finish on their own, a while later.
        lo, hi = self.settings.durations.preexisting
        for app in apps.values():
            for inst in app.instances.values():
                if inst.under_repair or inst.migrating:
                    action = "repair" if inst.under_repair else "migrate"
                    self._begin(app, inst, action, self._rng.uniform(lo, hi), by_request=False)

    # ----------------------------------------------------------------- building

    @classmethod
    def generate(
        cls,
        apps: int,
        seed: int = 0,
        *,
        fault_rate: float = 0.0,
        speed: float = 1.0,
        clock: Clock | None = None,
        settings: SimSettings | None = None,
        **options: Any,
    ) -> Simulator:
        """A generated fleet of ``apps`` apps; the same seed gives the same fleet and faults.

        ``options`` set further ``SimSettings`` fields (e.g. ``top_n``, ``envelope``).
        """
        s = settings or SimSettings()
        s.fault_rate = fault_rate
        s.speed = speed
        for name, value in options.items():
            if not hasattr(s, name):
                raise TypeError(f"unknown simulator setting {name!r}")
            setattr(s, name, value)
        return cls(generate_fleet(apps, seed), seed=seed, settings=s, clock=clock)

    @classmethod
    def from_scenario(
        cls, path: str | Path, *, clock: Clock | None = None, **options: Any
    ) -> Simulator:
        """A fleet defined by a scenario YAML file (see ``scenario.py``)."""
        from healer.simulator.scenario import load_scenario

        return load_scenario(Path(path), clock=clock, **options)

    @property
    def app_ids(self) -> list[str]:
        return list(self.apps)

    def app(self, app_id: str) -> SimApp:
        try:
            return self.apps[app_id]
        except KeyError:
            raise UnknownApp(app_id) from None

    def instance(self, app_id: str, instance_id: str) -> SimInstance | None:
        return self.app(app_id).instances.get(instance_id)

    def state_of(self, app_id: str, instance_id: str) -> str | None:
        """The instance's state, or None once it is gone."""
        inst = self.instance(app_id, instance_id)
        return None if inst is None else inst.state

    # --------------------------------------------------------------------- time

    def tick(self, now: float | None = None) -> None:
        """Play every operation and scheduled fault due up to ``now`` (default: the clock)."""
        with self.lock:
            now = self.clock() if now is None else now
            if now <= self.now:
                return
            heap = self._heap
            while True:
                next_op = heap[0][0] if heap else math.inf
                next_script = self._scripted[0].at + self.started if self._scripted else math.inf
                t = min(next_op, next_script, self._next_fault_at)
                if t > now:
                    break
                self.now = t
                if t == next_op:
                    _, _, app_id, iid, op_id = heapq.heappop(heap)
                    self._finish(app_id, iid, op_id)
                elif t == next_script:
                    f = self._scripted.pop(0)
                    self._scripted_fault(f)
                else:
                    self._scheduled_fault()
            self.now = now

    def advance(self, seconds: float) -> None:
        """Move a ``ManualClock`` on by ``seconds`` and play what fell due."""
        advance = getattr(self.clock, "advance", None)
        if advance is None:
            raise TypeError("advance() needs a clock with an advance() method, like ManualClock")
        advance(seconds)
        self.tick()

    step = advance

    def _duration(self, action: str) -> float:
        return float(getattr(self.settings.durations, action)) / self.settings.speed

    # --------------------------------------------------------------- operations

    def _begin(
        self,
        app: SimApp,
        inst: SimInstance,
        action: str,
        duration: float,
        *,
        by_request: bool,
        shadow: bool = False,
    ) -> None:
        # A new operation replaces a running one; interrupt then restores the oldest "before".
        before = (
            inst.op.before
            if inst.op is not None
            else {name: getattr(inst, name) for name in _RESTORED}
        )
        op = Operation(
            op_id=0 if shadow else next(self._op_ids),
            action=action,
            started=self.now,
            due=self.now + duration,
            by_request=by_request,
            before=before,
        )
        inst.op = op
        if shadow:
            return  # a twin's operation (see ``refuse``): the clock never finishes it
        heapq.heappush(
            self._heap, (op.due, next(self._seq), app.app_id, inst.instance_id, op.op_id)
        )

    def _finish(self, app_id: str, iid: str, op_id: int) -> None:
        app = self.apps.get(app_id)
        inst = app.instances.get(iid) if app is not None else None
        if app is None or inst is None or inst.op is None or inst.op.op_id != op_id:
            return  # interrupted, replaced, or the instance is gone
        action = inst.op.action
        inst.op = None

        if action == "restart":
            if self._rng.random() < self.settings.restart_fail_prob:
                inst.state = "UNKNOWN"
            else:
                inst.state = "RUNNING"
                inst.proc_state = inst.container_state = HEALTHY
        elif action == "stop":
            inst.state = "STOP"
        elif action == "start":
            inst.state = "RUNNING"
            inst.proc_state = inst.container_state = HEALTHY
        elif action in ("migrate", "repair"):
            if action == "migrate":
                self._by_addr.pop((inst.host_ip, inst.main_port), None)
                old_host = inst.host_ip
                while inst.host_ip == old_host:
                    inst.host_ip = host_for(self._rng)
                self._by_addr[(inst.host_ip, inst.main_port)] = (app_id, iid)
            inst.migrating = inst.under_repair = False
            inst.state = "RUNNING"
            inst.proc_state = inst.container_state = inst.pass_agent_state = HEALTHY
        elif action == "delete":
            self._remove(app, inst)
            return
        elif action == "deploy":
            inst.state = "RUNNING"
        log.debug("sim_operation_done", app_id=app_id, instance_id=iid, action=action)
        self._check_healed(app, inst)

    def _remove(self, app: SimApp, inst: SimInstance) -> None:
        del app.instances[inst.instance_id]
        app.disabled.discard(inst.instance_id)
        self._by_addr.pop((inst.host_ip, inst.main_port), None)
        self._resolve_events(inst.instance_id)
        if self.settings.replace_deleted and len(app.instances) < app.replica():
            fresh = new_instance(app, self._rng, state="DEPLOYING")
            self._by_addr[(fresh.host_ip, fresh.main_port)] = (app.app_id, fresh.instance_id)
            self._begin(app, fresh, "deploy", self._duration("deploy"), by_request=False)

    def _check_healed(self, app: SimApp, inst: SimInstance) -> None:
        if inst.faulted and inst.healthy():
            inst.faulted = False
            self.auditor.healed(inst.acted_since_fault)
            inst.acted_since_fault = None
            self._resolve_events(inst.instance_id)

    # ------------------------------------------------------------------ actions

    def act(
        self,
        action: str,
        app_id: str,
        instance_ids: Iterable[str],
        *,
        replica: str | None = None,
        partial_failure_rate: float = 0.0,
    ) -> dict[str, list[str]]:
        """Carry out an action as CloudPilot would, auditing each instance it names."""
        act_enum = Action(action)
        with self.lock:
            self.tick()
            app = self.app(app_id)
            success: list[str] = []
            failed: list[str] = []
            for iid in instance_ids:
                outcome = self._act_one(app, iid, act_enum, replica, partial_failure_rate)
                (success if outcome == "success" else failed).append(iid)
                self.auditor.action(act_enum.value, outcome, replica)
            log.info(
                "sim_action",
                app_id=app_id,
                action=act_enum.value,
                success=len(success),
                failed=len(failed),
                replica=replica,
            )
            return {"success_instances": success, "failed_instances": failed}

    def refuse(
        self,
        action: str,
        app_id: str,
        instance_ids: Iterable[str],
        outcome: str,
        *,
        replica: str | None = None,
    ) -> None:
        """Audit and count an action CloudPilot received but answered with an error.

        The action is not carried out: nothing in the fleet changes. Each
        instance it names is counted under ``outcome`` (see the auditor's
        docstring) and audited exactly as ``act`` would audit it, against the
        true state now: the request is played on a twin of the app, so that
        ``below_required`` and ``in_flight`` see the same arithmetic as if it
        had run. Its unsafe entries carry ``answered``, set to ``outcome``.
        """
        act_enum = Action(action)
        with self.lock:
            self.tick()
            twin = _twin(self.app(app_id))
            for iid in instance_ids:
                self._act_one(twin, iid, act_enum, replica, 0.0, refused=outcome)
                self.auditor.action(act_enum.value, outcome, replica)
            log.info("sim_action_refused", app_id=app_id, action=act_enum.value, outcome=outcome)

    def _act_one(
        self,
        app: SimApp,
        iid: str,
        action: Action,
        replica: str | None,
        fail_rate: float,
        *,
        refused: str | None = None,
    ) -> str:
        """Audit then apply one instance's action; ``refused`` plays it on a twin (``refuse``)."""
        inst = app.instances.get(iid)
        if inst is None:
            return "failed"

        # Audit first, against the state the action found.
        leader = self.settings.leader
        if leader is not None and replica is not None and replica != leader:
            self._unsafe("not_leader", action, app, iid, replica, leader=leader, answered=refused)
        for kind in instance_guard_kinds(app, inst, action):
            previous = inst.op.action if kind == "in_flight" and inst.op is not None else None
            self._unsafe(
                kind, action, app, iid, replica, previous_action=previous, answered=refused
            )
        was_available = app.is_available(inst)
        available_before = app.available() if was_available else 0

        if fail_rate and self.api_rng.random() < fail_rate:
            self.auditor.api_faults["partial_failure"] += 1
            return "failed"
        if not self._apply(app, inst, action, shadow=refused is not None):
            return "failed"

        if inst.faulted:
            inst.acted_since_fault = action.value
        if action in DISRUPTIVE and was_available:
            after = app.available()
            required = app.required()
            if after < required:
                self._unsafe(
                    "below_required",
                    action,
                    app,
                    iid,
                    replica,
                    replica_count=app.replica(),
                    required=required,
                    available_before=available_before,
                    available_after=after,
                    budget=app.budget,
                    answered=refused,
                )
        return "success"

    def _unsafe(
        self, kind: str, action: Action, app: SimApp, iid: str, replica: str | None, **details: Any
    ) -> None:
        log.warning(
            "sim_unsafe_action", kind=kind, action=action.value, app_id=app.app_id, instance_id=iid
        )
        self.auditor.unsafe_action(
            kind,
            action=action.value,
            app_id=app.app_id,
            instance_id=iid,
            replica=replica,
            at=iso(self.now),
            **{k: v for k, v in details.items() if v is not None},
        )

    def _apply(
        self, app: SimApp, inst: SimInstance, action: Action, *, shadow: bool = False
    ) -> bool:
        """Change the instance as the action does; False when CloudPilot would refuse it.

        ``shadow`` is for a twin of the app (``refuse``): the same changes to the
        twin's instances, but no operation is scheduled and nothing is healed.
        """
        begin = functools.partial(self._begin, by_request=True, shadow=shadow)
        # A deleted instance takes nothing more, but a delete still running can be interrupted.
        if inst.state == "DESTORY" and not (action is Action.INTERRUPT and inst.op is not None):
            return False
        if inst.frozen and action not in (Action.UNFREEZE, Action.INTERRUPT):
            return False

        if action is Action.RESTART:
            begin(app, inst, "restart", self._duration("restart"))
            inst.state = "RESTARTING"
        elif action is Action.STOP:
            begin(app, inst, "stop", self._duration("stop"))
            inst.state = "STOPPING"
        elif action is Action.START:
            begin(app, inst, "start", self._duration("start"))
        elif action is Action.MIGRATE:
            begin(app, inst, "migrate", self._duration("migrate"))
            inst.migrating = True
        elif action is Action.DELETE:
            begin(app, inst, "delete", self._duration("delete"))
            inst.state = "DESTORY"
        elif action is Action.REPAIR:
            begin(app, inst, "repair", self._duration("repair"))
            inst.under_repair = True
        elif action is Action.DISABLE:
            app.disabled.add(inst.instance_id)
        elif action is Action.ENABLE:
            app.disabled.discard(inst.instance_id)
        elif action is Action.UNFREEZE:
            inst.frozen = False
            if not shadow:
                self._check_healed(app, inst)
        elif action is Action.INTERRUPT:
            if inst.op is None:
                return False
            for name, value in inst.op.before.items():
                setattr(inst, name, value)
            inst.op = None
        return True

    # ------------------------------------------------------------------- faults

    def inject_fault(
        self,
        kind: str,
        app_id: str | None = None,
        instance_id: str | None = None,
        *,
        cluster: str | None = None,
        by_address: bool = False,
    ) -> list[tuple[str, str]]:
        """Inject a fault now; returns the (app, instance) pairs it hit.

        An instance fault needs ``app_id``; without ``instance_id`` it hits the
        app's first live instance. ``cluster_outage`` takes ``cluster`` (or the
        cluster of ``app_id``) and turns every instance there UNKNOWN.
        """
        with self.lock:
            self.tick()
            if kind not in FAULT_KINDS:
                raise FaultError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
            if kind == "cluster_outage":
                if cluster is None:
                    if app_id is None:
                        raise FaultError("cluster_outage needs a cluster or an app_id")
                    cluster = self._app_or_fault(app_id).cluster
                if not any(a.cluster == cluster for a in self.apps.values()):
                    raise FaultError(f"no app runs in cluster {cluster!r}")
                return self._cluster_outage(cluster)
            if app_id is None:
                raise FaultError(f"fault {kind!r} needs an app_id")
            app = self._app_or_fault(app_id)
            if instance_id is None:
                live = [i for i in app.instances.values() if i.state != "DESTORY"]
                if not live:
                    raise FaultError(f"app {app_id!r} has no live instance")
                inst = live[0]
            else:
                found = app.instances.get(instance_id)
                if found is None:
                    raise FaultError(f"app {app_id!r} has no instance {instance_id!r}")
                inst = found
            self._fault_instance(app, inst, kind, by_address=by_address)
            self.auditor.fault(kind, 1)
            return [(app.app_id, inst.instance_id)]

    def _app_or_fault(self, app_id: str) -> SimApp:
        app = self.apps.get(app_id)
        if app is None:
            raise FaultError(f"unknown app {app_id!r}")
        return app

    def _cluster_outage(self, cluster: str | None) -> list[tuple[str, str]]:
        hit: list[tuple[str, str]] = []
        for app in self.apps.values():
            if app.cluster != cluster:
                continue
            for inst in app.instances.values():
                if inst.state != "DESTORY":
                    self._fault_instance(app, inst, "cluster_outage", by_address=False)
                    hit.append((app.app_id, inst.instance_id))
        self.auditor.fault("cluster_outage", len(hit))
        log.info("sim_cluster_outage", cluster=cluster, instances=len(hit))
        return hit

    def _fault_instance(
        self, app: SimApp, inst: SimInstance, kind: str, *, by_address: bool
    ) -> None:
        if kind in ("unknown", "cluster_outage"):
            inst.state = "UNKNOWN"
        elif kind == "invalid_state":
            inst.state = "INVALID_STATE"
        elif kind == "agent_down":
            inst.pass_agent_state = AGENT_DOWN
        elif kind == "process_down":
            inst.proc_state = PROC_DOWN
        elif kind == "container_down":
            inst.container_state = CONTAINER_DOWN
        elif kind == "frozen":
            inst.frozen = True
        inst.faulted = True
        inst.acted_since_fault = None
        if kind in FAULT_EVENTS:
            self._raise_event(app, inst, kind, by_address)
        log.debug("sim_fault", kind=kind, app_id=app.app_id, instance_id=inst.instance_id)

    def stop_faults(self) -> None:
        """No more scheduled faults from now on (the demo's drain period)."""
        with self.lock:
            self.settings.fault_rate = 0.0
            self._next_fault_at = math.inf

    def _draw_fault_gap(self, after: float) -> float:
        rate = self.settings.fault_rate * len(self.apps) / 60.0
        if rate <= 0:
            return math.inf
        return after + self._fault_rng.expovariate(rate)

    def _scheduled_fault(self) -> None:
        # Draw the same numbers whatever the fleet's state: the schedule depends on the seed only.
        r = self._fault_rng
        u_app, u_inst, u_addr = r.random(), r.random(), r.random()
        kinds = list(self.settings.fault_mix)
        kind = r.choices(kinds, weights=[self.settings.fault_mix[k] for k in kinds])[0]
        self._next_fault_at = self._draw_fault_gap(self.now)

        app = self.apps[self._app_order[int(u_app * len(self._app_order))]]
        if kind == "cluster_outage":
            self._cluster_outage(app.cluster)
            return
        # The target is picked by position among the app's instances, whatever their state,
        # so that two healers run on one seed face the same faults. A random fault is a
        # single-instance fault: a target that is busy (an operation running, being deleted)
        # or faulted already is left alone and the fault counted as skipped, so every
        # injected fault can be healed.
        ids = sorted(app.instances)
        if not ids:
            return
        inst = app.instances[ids[int(u_inst * len(ids))]]
        if inst.op is not None or inst.state == "DESTORY" or inst.faulted:
            self.auditor.fault_skipped(kind)
            return
        self._fault_instance(
            app, inst, kind, by_address=u_addr < self.settings.addr_only_event_ratio
        )
        self.auditor.fault(kind, 1)

    def _scripted_fault(self, f: ScriptedFault) -> None:
        try:
            self.inject_fault(f.kind, f.app_id, f.instance_id, cluster=f.cluster)
        except FaultError as exc:
            # A scenario naming an instance that is gone by then is not worth stopping for.
            log.warning("sim_scripted_fault_skipped", kind=f.kind, reason=str(exc))

    # ------------------------------------------------------------------- events

    def _raise_event(self, app: SimApp, inst: SimInstance, kind: str, by_address: bool) -> None:
        name, level = FAULT_EVENTS[kind]
        event: dict[str, Any] = {
            "event_id": f"ev-{next(self._event_ids):08d}",
            "app_id": app.app_id,
            "name": name,
            "level": level,
            "status": "firing",
            "start_time": iso(self.now),
            "end_time": None,
            "host_ip": inst.host_ip,
            "port": inst.main_port,
        }
        if not by_address:
            event["instance_id"] = inst.instance_id
        self._events.setdefault(app.app_id, []).append(event)
        self._firing.setdefault(inst.instance_id, []).append(event)

    def add_event(self, app_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Add a monitoring event as given (a scenario's); missing ids and times are filled in."""
        with self.lock:
            self.app(app_id)
            full = {
                "event_id": f"ev-{next(self._event_ids):08d}",
                "app_id": app_id,
                "level": "warning",
                "status": "firing",
                "start_time": iso(self.now),
                "end_time": None,
                **event,
            }
            self._events.setdefault(app_id, []).append(full)
            iid = full.get("instance_id")
            if iid is None and full.get("host_ip") is not None:
                found = self._by_addr.get((str(full["host_ip"]), int(full.get("port") or 0)))
                iid = None if found is None else found[1]
            if iid is not None and full["status"] == "firing":
                self._firing.setdefault(str(iid), []).append(full)
            return full

    def _resolve_events(self, instance_id: str) -> None:
        for event in self._firing.pop(instance_id, ()):
            event["status"] = "resolved"
            event["end_time"] = iso(self.now)
            event["_resolved_at"] = self.now

    # ------------------------------------------------------------------ queries

    def app_meta(self, app_id: str) -> dict[str, Any]:
        return {"app_meta": self.app(app_id).meta}

    def min_usable(self, app_id: str) -> dict[str, Any]:
        return {"min_usable_info": self.app(app_id).budget}

    def hard_limits(self, app_id: str) -> dict[str, Any]:
        return dict(self.app(app_id).hard_limits)

    def disabled(self, app_id: str) -> dict[str, Any]:
        app = self.app(app_id)
        order = {iid: i.index for iid, i in app.instances.items()}
        return {"disabled_instance_id_list": sorted(app.disabled, key=lambda i: order.get(i, -1))}

    def instance_status(self, app_id: str, status: str = "ALL") -> dict[str, Any]:
        """Per-state counts with up to ``top_n`` names each; ``status`` filters the states."""
        app = self.app(app_id)
        states: dict[str, list[str]] = {s: [] for s in KNOWN_STATES}
        for inst in app.instances.values():
            states.setdefault(inst.state, []).append(inst.instance_id)
        if status == "RUNNING":
            states = {"RUNNING": states["RUNNING"]}
        elif status == "!RUNNING":
            states.pop("RUNNING")
        n = self.settings.top_n
        return {
            "app_id": app_id,
            "total_num": len(app.instances),
            "status_instance_top_five": {
                s: {"value": len(ids), "top_five_list": ids[:n]} for s, ids in states.items()
            },
        }

    def instance_info(self, app_id: str) -> dict[str, Any]:
        app = self.app(app_id)
        return {
            "instance_info_list": [
                {
                    "instance_id": i.instance_id,
                    "host_ip": i.host_ip,
                    "main_port": i.main_port,
                    "proc_state": i.proc_state,
                    "container_state": i.container_state,
                    "pass_agent_state": i.pass_agent_state,
                    "frozen": i.frozen,
                    "bsn_disabled": i.instance_id in app.disabled,
                    "under_repair": i.under_repair,
                    "migrating": i.migrating,
                }
                for i in app.instances.values()
            ]
        }

    def instance_by_addr(self, host_ip: str, port: int) -> dict[str, Any]:
        found = self._by_addr.get((host_ip, port))
        return {"instance_id": None if found is None else found[1]}

    def events(self, app_id: str) -> dict[str, Any]:
        self.app(app_id)
        kept = self._events.get(app_id)
        if not kept:
            return {"events": []}
        horizon = self.now - self.settings.event_retention
        kept[:] = [e for e in kept if e.get("_resolved_at", math.inf) >= horizon]
        return {"events": [{k: v for k, v in e.items() if k != "_resolved_at"} for e in kept]}

    # ---------------------------------------------------------------- reporting

    def required(self, app_id: str) -> int:
        return self.app(app_id).required()

    def available(self, app_id: str) -> int:
        return self.app(app_id).available()

    def report(self) -> dict[str, Any]:
        with self.lock:
            out = self.auditor.report()
            out["apps"] = len(self.apps)
            out["instances"] = sum(len(a.instances) for a in self.apps.values())
            out["sim_time"] = iso(self.now)
            return out

    def describe(self, app_id: str) -> dict[str, Any]:
        """The whole true state of one app, for tests and people (``GET /sim/apps/{id}``)."""
        app = self.app(app_id)
        return {
            "app_id": app_id,
            "meta": app.meta,
            "budget": app.budget,
            "replica": app.replica(),
            "required": app.required(),
            "available": app.available(),
            "disabled": sorted(app.disabled),
            "instances": {
                iid: {
                    "state": i.state,
                    "host_ip": i.host_ip,
                    "main_port": i.main_port,
                    "proc_state": i.proc_state,
                    "container_state": i.container_state,
                    "pass_agent_state": i.pass_agent_state,
                    "frozen": i.frozen,
                    "under_repair": i.under_repair,
                    "migrating": i.migrating,
                    "operation": None if i.op is None else i.op.action,
                    "faulted": i.faulted,
                }
                for iid, i in app.instances.items()
            },
        }
