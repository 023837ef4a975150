"""Scenario files: a fleet written out by hand, for tests and demos that need exact cases.

A scenario is YAML. Apps use the same words as policy test cases (DESIGN
section 5), so a case's fleet can be served as-is::

    seed: 1                       # optional: host addresses, action outcomes, faults
    settings: {restart_fail_prob: 0.2, top_n: 5, fault_rate: 0}  # any SimSettings field
    generate: {apps: 20, seed: 3} # optional: generated apps besides the listed ones
    apps:
      web-1:
        meta: {product: search, module: web, cluster: bj-01, service_level: 1}
        budget: {instanceControlBudget: {type: MinAvailableRatio, value: 80}, replica: 7}
        hard_limits: {cpu: true}
        disabled: [web-1.5]
        instances:                # id: state and instance_info fields; {} is healthy
          web-1.0: {}
          web-1.1: {status: UNKNOWN}
          web-1.2: {pass_agent_state: DOWN}
          web-1.6: {frozen: true}
        events:                   # optional, as served (ids and times are filled in)
          - {name: proc_dead, instance_id: web-1.1}
      api-1:
        replicas: 3               # api-1.0 … api-1.2, all healthy
        budget: null              # an app without min_usable_info
    faults:                       # optional: faults at a time after the start
      - {at: 30s, kind: unknown, app_id: web-1, instance_id: web-1.0}

``budget`` left out means ratio 80 of the listed instances; ``meta`` left
out means a plain app. An instance that starts UNKNOWN, INVALID_STATE or
with a component down counts as faulted, so healing it counts in the report.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from healer.files import read_text
from healer.simulator.core import FAULT_KINDS, Clock, ScriptedFault, SimSettings, Simulator
from healer.simulator.fleet import (
    HEALTHY,
    SimApp,
    SimInstance,
    generate_fleet,
    host_for,
)

_INSTANCE_KEYS = frozenset(
    {
        "status",
        "host_ip",
        "main_port",
        "proc_state",
        "container_state",
        "pass_agent_state",
        "frozen",
        "bsn_disabled",
        "disabled",
        "under_repair",
        "migrating",
    }
)
_APP_KEYS = frozenset(
    {"meta", "budget", "hard_limits", "disabled", "instances", "replicas", "events"}
)
_TOP_KEYS = frozenset({"seed", "settings", "generate", "apps", "faults"})
_FAULT_KEYS = frozenset({"at", "kind", "app_id", "instance_id", "cluster"})


class ScenarioError(ValueError):
    """A scenario file that cannot be read; the message names the file and the place."""


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    from healer.policy.durations import DurationError, parse_duration

    try:
        d: timedelta = parse_duration(str(value))
    except DurationError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    return d.total_seconds()


def _check_keys(data: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}")
    return dict(data)


def _instance(app: SimApp, iid: str, fields: dict[str, Any], rng: random.Random) -> SimInstance:
    suffix = iid.rsplit(".", 1)[-1]
    index = int(suffix) if suffix.isdigit() else app.next_index
    app.next_index = max(app.next_index, index + 1)
    inst = SimInstance(
        instance_id=iid,
        index=index,
        host_ip=str(fields.get("host_ip") or host_for(rng)),
        main_port=int(fields.get("main_port") or rng.randrange(8000, 9000)),
        state=str(fields.get("status", "RUNNING")),
        proc_state=fields.get("proc_state", HEALTHY),
        container_state=fields.get("container_state", HEALTHY),
        pass_agent_state=fields.get("pass_agent_state", HEALTHY),
        frozen=bool(fields.get("frozen", False)),
        under_repair=bool(fields.get("under_repair", False)),
        migrating=bool(fields.get("migrating", False)),
    )
    if fields.get("disabled") or fields.get("bsn_disabled"):
        app.disabled.add(iid)
    broken_state = inst.state not in ("RUNNING", "NEW", "DEPLOYING", "DEPLOY_OK", "STOP")
    inst.faulted = broken_state or not inst.components_healthy()
    return inst


def _app(app_id: str, raw: Any, rng: random.Random, where: str) -> tuple[SimApp, list[Any]]:
    data = _check_keys(raw, _APP_KEYS, where)
    meta = {
        "app_id": app_id,
        "product": "default",
        "module": app_id,
        "cluster": "local",
        "service_level": 2,
        "extend_mask": False,
        "shrink_mask": False,
        **_mapping(data.get("meta"), f"{where}.meta"),
    }
    app = SimApp(
        app_id=app_id,
        meta=meta,
        budget=None,
        hard_limits=dict(data.get("hard_limits") or {"cpu": False}),
    )
    instances = data.get("instances")
    if instances is None:
        count = int(data.get("replicas", 1))
        instances = {f"{app_id}.{n}": {} for n in range(count)}
    if not isinstance(instances, dict):
        raise ScenarioError(f"{where}.instances: expected a mapping of instance id to fields")
    for iid, fields in instances.items():
        checked = _check_keys(fields, _INSTANCE_KEYS, f"{where}.instances.{iid}")
        inst = _instance(app, str(iid), checked, rng)
        app.instances[inst.instance_id] = inst
    app.disabled.update(str(i) for i in data.get("disabled") or ())

    if "budget" in data:
        budget = data["budget"]
        app.budget = None if budget is None else _plain(budget)
    else:
        ratio = {"type": "MinAvailableRatio", "value": 80}
        app.budget = {"instanceControlBudget": ratio, "replica": len(app.instances)}
    return app, list(data.get("events") or ())


def _mapping(data: Any, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {type(data).__name__}")
    return dict(data)


def _plain(value: Any) -> Any:
    """ruamel's mappings and sequences as plain dicts and lists (they are served as JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_scenario(path: Path, *, clock: Clock | None = None, **options: Any) -> Simulator:
    """Build a ``Simulator`` from a scenario file; ``options`` override its settings."""
    try:
        raw = YAML(typ="safe").load(read_text(path, 64 * 1024 * 1024))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # ruamel's errors share no base class worth naming here
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    doc = _check_keys(_plain(raw), _TOP_KEYS, str(path))
    seed = int(doc.get("seed", 0))
    rng = random.Random(f"{seed}:scenario")

    settings = SimSettings()
    for name, value in {**(doc.get("settings") or {}), **options}.items():
        if not hasattr(settings, name):
            raise ScenarioError(f"{path}: settings: unknown setting {name!r}")
        setattr(settings, name, value)

    apps: dict[str, SimApp] = {}
    if doc.get("generate"):
        gen = _check_keys(doc["generate"], frozenset({"apps", "seed"}), f"{path}: generate")
        apps.update(generate_fleet(int(gen.get("apps", 0)), int(gen.get("seed", seed))))
    events: dict[str, list[Any]] = {}
    for app_id, app_raw in (doc.get("apps") or {}).items():
        app, evs = _app(str(app_id), app_raw, rng, f"{path}: apps.{app_id}")
        apps[app.app_id] = app
        events[app.app_id] = evs

    faults: list[ScriptedFault] = []
    for n, f in enumerate(doc.get("faults") or ()):
        where = f"{path}: faults[{n}]"
        fd = _check_keys(f, _FAULT_KEYS, where)
        if fd.get("kind") not in FAULT_KINDS:
            raise ScenarioError(f"{where}: kind must be one of {', '.join(FAULT_KINDS)}")
        faults.append(
            ScriptedFault(
                at=_seconds(fd.get("at", 0), where),
                kind=str(fd["kind"]),
                app_id=fd.get("app_id"),
                instance_id=fd.get("instance_id"),
                cluster=fd.get("cluster"),
            )
        )

    sim = Simulator(apps, seed=seed, settings=settings, clock=clock, scripted_faults=faults)
    for app_id, evs in events.items():
        for ev in evs:
            if not isinstance(ev, dict) or "name" not in ev:
                raise ScenarioError(f"{path}: apps.{app_id}.events: each event needs a name")
            sim.add_event(app_id, ev)
    return sim
