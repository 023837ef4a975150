"""One app's view at one time, assembled from the CloudPilot payloads.

The snapshot sits between the client and everything that decides: policies
read it to propose, the guard reads it to count. It is complete or it is not:
``missing`` names every piece that failed to load, and an incomplete snapshot
is never acted on (``stale_snapshot``).

Per-instance states come from ``status_instance_top_five``, which names at
most five instances per state. An instance named in no list is RUNNING only
when every non-RUNNING instance is accounted for by name; otherwise its state
is unresolved (``None``): not available, not unhealthy, and the guard charges
a disruptive action on it to the budget as if it were serving.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healer.cloudpilot.models import (
    AppMeta,
    Event,
    HardLimits,
    InstanceInfo,
    InstanceStatus,
    MinUsableInfo,
    normalize_state,
)

#: Process, container and agent values taken as healthy (compared case-blind).
DEFAULT_HEALTHY_VALUES: frozenset[str] = frozenset({"RUNNING", "OK", "UP", "NORMAL"})

#: States in which an instance is unhealthy outright.
UNHEALTHY_STATES: frozenset[str] = frozenset({"UNKNOWN", "INVALID_STATE"})

#: States of a transition or a deliberate choice: neither healthy nor unhealthy.
NEUTRAL_STATES: frozenset[str] = frozenset(
    {"NEW", "DEPLOYING", "DEPLOY_OK", "RESTARTING", "STOPPING", "STOP", "DESTORY"}
)

#: States that mean a rollout is in progress on the app.
ROLLOUT_STATES: frozenset[str] = frozenset({"NEW", "DEPLOYING", "DEPLOY_OK"})


def bad_state(state: str) -> bool:
    """UNKNOWN, INVALID_STATE, or a state the API never documented: unhealthy outright."""
    state = normalize_state(state)
    return state != "RUNNING" and state not in NEUTRAL_STATES


@dataclass(frozen=True)
class HealthValues:
    """Which process/container/agent values count as healthy."""

    healthy: frozenset[str] = DEFAULT_HEALTHY_VALUES

    def judge(self, value: Any) -> bool | None:
        """True when healthy, False when a fault, None when missing or null (unknown)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return str(value).strip().upper() in self.healthy


DEFAULT_HEALTH = HealthValues()


@dataclass(frozen=True)
class Instance:
    """One instance as the snapshot sees it: its state and its ``instance_info`` fields."""

    instance_id: str
    state: str | None
    info: InstanceInfo
    disabled: bool

    @property
    def frozen(self) -> bool:
        return bool(self.info.frozen)

    @property
    def under_repair(self) -> bool:
        return bool(self.info.under_repair)

    @property
    def migrating(self) -> bool:
        return bool(self.info.migrating)

    def field(self, name: str) -> Any:
        """A field by its policy name; ``status`` is the state, ``disabled`` the merged flag."""
        if name == "status":
            return self.state
        if name == "disabled":
            return self.disabled
        return getattr(self.info, name, None)

    def faults(self, health: HealthValues = DEFAULT_HEALTH) -> dict[str, bool | None]:
        """Health of process, container and agent: True healthy, False fault, None unknown."""
        return {
            "proc_state": health.judge(self.info.proc_state),
            "container_state": health.judge(self.info.container_state),
            "pass_agent_state": health.judge(self.info.pass_agent_state),
        }

    def serving(self, health: HealthValues = DEFAULT_HEALTH) -> bool:
        """RUNNING, process and container not in a fault, and not taken out deliberately.

        This is availability before the ledger is consulted; an in-flight
        healer action also makes an instance unavailable (the guard adds that).
        """
        if self.state != "RUNNING":
            return False
        if self.disabled or self.under_repair or self.migrating:
            return False
        f = self.faults(health)
        return f["proc_state"] is not False and f["container_state"] is not False

    def unhealthy(self, health: HealthValues = DEFAULT_HEALTH) -> bool:
        """UNKNOWN, INVALID_STATE or an unknown state; or RUNNING with a fault."""
        if self.state is None:
            return False
        if self.disabled or self.under_repair or self.migrating:
            return False
        if self.state == "RUNNING":
            return False in self.faults(health).values()
        # UNKNOWN, INVALID_STATE, or a state the API never documented.
        return self.state not in NEUTRAL_STATES


@dataclass(frozen=True)
class AppSnapshot:
    """Everything known about one app at ``taken_at``; complete when ``missing`` is empty."""

    app_id: str
    taken_at: datetime
    meta: AppMeta | None = None
    budget: MinUsableInfo | None = None
    total_num: int | None = None
    state_counts: Mapping[str, int] = field(default_factory=dict)
    instances: Mapping[str, Instance] = field(default_factory=dict)
    events: tuple[Event, ...] = ()
    hard_limits: HardLimits | None = None
    missing: tuple[str, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def desired_replicas(self) -> int | None:
        """``R``: the budget's ``replica`` when it is a whole number, else ``total_num``."""
        if self.budget is not None:
            r = self.budget.replica
            if isinstance(r, int) and not isinstance(r, bool):
                return r
            if isinstance(r, str) and r.strip().isdigit():
                return int(r.strip())
        return self.total_num

    def unhealthy_count(self, health: HealthValues = DEFAULT_HEALTH) -> int:
        """Unhealthy instances, counting those the top-five lists leave unnamed.

        The lists name at most five instances per state, but the counts are
        complete: an UNKNOWN instance no list named is unhealthy too. Without
        it, a mass failure of an app of 11 or more instances would never pass
        half of it, and the short circuit and the fleet brake would stay open.
        """
        named_bad = 0
        unhealthy = 0
        for inst in self.instances.values():
            if inst.unhealthy(health):
                unhealthy += 1
            if inst.state is not None and bad_state(inst.state):
                named_bad += 1
        counted_bad = sum(n for state, n in self.state_counts.items() if bad_state(state))
        return unhealthy + max(counted_bad - named_bad, 0)

    def rollout_in_progress(self) -> bool:
        return any(self.state_counts.get(s, 0) > 0 for s in ROLLOUT_STATES)

    def firing_events(self) -> list[Event]:
        return [e for e in self.events if e.firing]


def resolve_states(status: InstanceStatus, ids: Iterable[str]) -> dict[str, str | None]:
    """Each instance's state from the top-five lists, as described in the module docstring."""
    named: dict[str, str] = {}
    non_running_total = 0
    non_running_named = 0
    for state, bucket in status.status_instance_top_five.items():
        for name in bucket.top_five_list:
            named.setdefault(name, normalize_state(state))
        if state != "RUNNING":
            non_running_total += bucket.value
            non_running_named += len(set(bucket.top_five_list))
    all_others_running = non_running_named >= non_running_total
    return {i: named.get(i, "RUNNING" if all_others_running else None) for i in ids}


def build_snapshot(
    app_id: str,
    taken_at: datetime,
    *,
    meta: AppMeta | None,
    budget: MinUsableInfo | None,
    status: InstanceStatus | None,
    infos: list[InstanceInfo] | None,
    disabled: list[str] | None,
    events: list[Event] | None,
    hard_limits: HardLimits | None = None,
    missing: Iterable[str] = (),
    errors: Mapping[str, str] | None = None,
) -> AppSnapshot:
    """Assemble a snapshot from parsed payloads; a ``None`` piece is listed in ``missing``.

    ``infos`` naming one instance more than once is contradictory data: the
    piece is listed in ``missing`` with the ids in ``errors``.
    """
    gone = list(missing)
    problems = dict(errors or {})
    if infos is not None:
        # The same instance twice (say RUNNING, then DEAD) contradicts itself: whichever record
        # were kept would be a guess, so the piece counts as not loaded and nothing is done.
        counted = Counter(i.instance_id for i in infos)
        twice = sorted(iid for iid, n in counted.items() if n > 1)
        if twice:
            shown = ", ".join(twice[:5]) + (f" (+{len(twice) - 5} more)" if len(twice) > 5 else "")
            problems["instance_info"] = f"duplicate instance ids: {shown}"
            if "instance_info" not in gone:
                gone.append("instance_info")
            infos = None
    for name, piece in (
        ("app_meta", meta),
        ("instance_status", status),
        ("instance_info", infos),
        ("disabled", disabled),
        ("events", events),
    ):
        if piece is None and name not in gone:
            gone.append(name)

    instances: dict[str, Instance] = {}
    counts: dict[str, int] = {}
    if status is not None:
        counts = {s: b.value for s, b in status.status_instance_top_five.items()}
    if status is not None and infos is not None:
        disabled_set = set(disabled or ())
        ids = sorted(i.instance_id for i in infos)
        states = resolve_states(status, ids)
        by_id = {i.instance_id: i for i in infos}
        for iid in ids:
            info = by_id[iid]
            instances[iid] = Instance(
                instance_id=iid,
                state=states[iid],
                info=info,
                disabled=iid in disabled_set or bool(info.bsn_disabled),
            )

    total = status.total_num if status is not None else None
    return AppSnapshot(
        app_id=app_id,
        taken_at=taken_at,
        meta=meta,
        budget=budget,
        total_num=total if total is not None else (len(instances) if status else None),
        state_counts=counts,
        instances=instances,
        events=tuple(events or ()),
        hard_limits=hard_limits,
        missing=tuple(gone),
        errors=problems,
    )
