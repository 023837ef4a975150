"""Turn an app as a test case describes it into CloudPilot payloads, and those into a snapshot.

``healer test`` must put a case through the same parsing as production:
this module writes the JSON bodies CloudPilot would send (section 1 of
DESIGN.md, typos included), then reads them back with the payload models
and ``build_snapshot``. A call the case marks as failed is answered as an
HTTP 500: its piece is missing and the snapshot is incomplete.

An app in a case (every key optional; omitted fields take healthy defaults)::

    web-1:
      meta: {product: search, service_level: 1, shrink_mask: false}
      budget: {instanceControlBudget: {type: MinAvailableRatio, value: 80}, replica: 7}
      disabled: [web-1.4]
      instances:
        web-1.0: {}
        web-1.1: {status: UNKNOWN}
        web-1.2: {pass_agent_state: DOWN, frozen: true}
      events: [{name: proc_dead, instance_id: web-1.0}]
      fail_calls: [instance_info]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from healer.cloudpilot.models import (
    AppMeta,
    DisabledList,
    EventList,
    InstanceInfo,
    InstanceInfoList,
    InstanceStatus,
    MinUsableInfo,
)
from healer.snapshot import AppSnapshot, build_snapshot

#: The calls a snapshot is built from, by their name in code (DESIGN section 1).
CALLS: tuple[str, ...] = (
    "app_meta",
    "min_usable",
    "instance_status",
    "instance_info",
    "disabled",
    "events",
)

APP_KEYS = frozenset(
    {"meta", "budget", "disabled", "instances", "events", "total_num", "fail_calls"}
)

HEALTHY_INFO: dict[str, Any] = {
    "proc_state": "RUNNING",
    "container_state": "RUNNING",
    "pass_agent_state": "RUNNING",
    "frozen": False,
    "bsn_disabled": False,
    "under_repair": False,
    "migrating": False,
}

#: The API names at most five instances per state.
TOP = 5


#: What an instance in a case may say: its state, ``disabled``, and ``instance_info`` fields.
INSTANCE_KEYS = frozenset(
    {"status", "disabled", *(set(InstanceInfo.model_fields) - {"instance_id"})}
)


class CaseError(ValueError):
    """A case file that does not describe an app the runner can serve.

    ``path`` is where in the app's description the problem is (``("instances",
    "web-1.0", "statsu")``), so that the loader can point at its line.
    """

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path


def app_payloads(app_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of every snapshot call for one app described as in the module docstring."""
    unknown = sorted(set(spec) - APP_KEYS)
    if unknown:
        known = ", ".join(sorted(APP_KEYS))
        raise CaseError(f"app {app_id}: unknown key {unknown[0]!r}; known: {known}", (unknown[0],))

    where = f"app {app_id}"
    # Misspelt keys would pass as extra fields CloudPilot sent: refuse them. Values are
    # sent as given, so that a case can describe an odd answer on purpose.
    for part, model in (("meta", AppMeta), ("budget", MinUsableInfo)):
        given = spec.get(part)
        if not isinstance(given, Mapping):
            continue  # meta must be a mapping (checked below); an odd budget is sent as written
        odd = sorted(str(k) for k in set(given) - set(model.model_fields))
        if odd:
            known = ", ".join(sorted(model.model_fields))
            raise CaseError(
                f"{where}: {part}: unknown key {odd[0]!r}; known: {known}", (part, odd[0])
            )
    try:
        calls = _sequence(spec.get("fail_calls"), f"{where}: fail_calls")
    except CaseError as exc:
        raise CaseError(str(exc), ("fail_calls",)) from None
    bad = [c for c in calls if c not in CALLS]
    if bad:
        msg = f"{where}: fail_calls: {bad[0]!r} is not a snapshot call; known: {', '.join(CALLS)}"
        raise CaseError(msg, ("fail_calls",))
    instances = _mapping(spec.get("instances"), f"{where}: instances")
    disabled = [str(i) for i in _sequence(spec.get("disabled"), f"{where}: disabled")]
    by_state: dict[str, list[str]] = {}
    infos: list[dict[str, Any]] = []
    ordered = sorted((str(iid), fields) for iid, fields in instances.items())
    for n, (iid, fields) in enumerate(ordered):
        fields = dict(_mapping(fields, f"{where}: instance {iid}"))
        # A misspelt field would otherwise pass as an extra field CloudPilot sent.
        odd = sorted(str(k) for k in set(fields) - INSTANCE_KEYS)
        if odd:
            known = ", ".join(sorted(INSTANCE_KEYS))
            msg = f"{where}: instance {iid}: unknown key {odd[0]!r}; known: {known}"
            raise CaseError(msg, ("instances", iid, odd[0]))
        state = fields.pop("status", "RUNNING")
        if not isinstance(state, str) or not state.strip():
            msg = f"{where}: instance {iid}: status must be a state name, got {state!r}"
            raise CaseError(msg, ("instances", iid, "status"))
        by_state.setdefault(state, []).append(iid)
        if fields.pop("disabled", False) and iid not in disabled:
            disabled.append(iid)
        info = {"instance_id": iid, "host_ip": "127.0.0.1", "main_port": 8000 + n}
        info.update(HEALTHY_INFO)
        info.update(fields)
        infos.append(info)

    meta = {
        "app_id": app_id,
        "product": "product",
        "module": "module",
        "cluster": "cluster",
        "service_level": 1,
        "extend_mask": False,
        "shrink_mask": False,
    }
    meta.update(_mapping(spec.get("meta"), f"{where}: meta"))
    events = []
    for n, ev in enumerate(_sequence(spec.get("events"), f"{where}: events")):
        events.append(
            {"app_id": app_id, "status": "firing", **_mapping(ev, f"{where}: events[{n}]")}
        )

    total = spec.get("total_num", len(instances))
    return {
        "app_meta": {"app_meta": meta},
        "min_usable": {"min_usable_info": spec.get("budget")},
        "instance_status": {
            "app_id": app_id,
            "total_num": total,
            "status_instance_top_five": {
                state: {"value": len(ids), "top_five_list": ids[:TOP]}
                for state, ids in sorted(by_state.items())
            },
        },
        "instance_info": {"instance_info_list": infos},
        "disabled": {"disabled_instance_id_list": disabled},
        "events": {"events": events},
    }


def _mapping(value: Any, where: str) -> Mapping[Any, Any]:
    """``value`` when it is a mapping (nothing given is an empty one); else a CaseError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CaseError(f"{where}: expected a mapping of fields, got {type(value).__name__}")
    return value


def _sequence(value: Any, where: str) -> list[Any]:
    """``value`` as a list when it is one (nothing given is an empty one); else a CaseError."""
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise CaseError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


def _body(payloads: Mapping[str, Any], call: str) -> bytes:
    # Through JSON text, as the wire would carry it.
    return json.dumps(payloads[call]).encode()


def parse_snapshot(
    app_id: str,
    payloads: Mapping[str, Any],
    taken_at: datetime,
    *,
    failed: Iterable[str] = (),
) -> AppSnapshot:
    """Read the payloads back with the production models; ``failed`` calls answered HTTP 500."""
    failed = set(failed)
    errors = {call: "HTTP 500" for call in failed if call in CALLS}

    def body(call: str) -> Any:
        return None if call in failed else json.loads(_body(payloads, call))

    raw = body("app_meta")
    meta = AppMeta.model_validate(raw["app_meta"]) if raw is not None else None
    raw = body("min_usable")
    budget = None
    if raw is not None and raw.get("min_usable_info") is not None:
        budget = MinUsableInfo.model_validate(raw["min_usable_info"])
    raw = body("instance_status")
    status = InstanceStatus.model_validate(raw) if raw is not None else None
    raw = body("instance_info")
    infos = InstanceInfoList.model_validate(raw).instance_info_list if raw is not None else None
    raw = body("disabled")
    disabled = None
    if raw is not None:
        disabled = DisabledList.model_validate(raw).disabled_instance_id_list
    raw = body("events")
    events = EventList.model_validate(raw).events if raw is not None else None

    missing = ["min_usable"] if "min_usable" in failed else []
    return build_snapshot(
        app_id,
        taken_at,
        meta=meta,
        budget=budget,
        status=status,
        infos=infos,
        disabled=disabled,
        events=events,
        missing=missing,
        errors=errors,
    )


def snapshot_of(
    app_id: str, spec: Mapping[str, Any], taken_at: datetime, failed: Iterable[str] = ()
) -> AppSnapshot:
    """An app described as in a case, as production would see it."""
    return parse_snapshot(app_id, app_payloads(app_id, spec), taken_at, failed=failed)
