"""Evaluation: from one app's snapshot and the policies to the actions they propose.

This is the step between the snapshot and the guard. It is a pure function:
the same policies, snapshot, condition memory and clock give the same
proposals and the same new memory. It decides nothing about safety; every
proposal still passes the guard.

A condition holds for an instance when the instance's field has one of the
accepted values (or, with ``{not: [...]}``, a value outside them). A field
that is missing, null, or from a piece of the snapshot that failed to load
never holds: a probe error is never evidence of a fault. An instance whose
state is unresolved (``None``) never matches a state condition.

``for`` is remembered per (policy, app, instance, condition), where the
condition is the policy's whole ``when`` (its conditions joined by "and",
e.g. ``status in [RUNNING] and proc_state not in [RUNNING]``), as the time
it was first seen holding. An entry disappears as soon as the conditions are
seen not holding together, so the clock starts again; editing a policy's
``when`` starts it again too. Only instances that match are remembered, so
the memory stays as small as the set of faults.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from healer.cloudpilot.models import Action, AppMeta, Event
from healer.model import MatchedCondition, Proposal
from healer.policy.model import FLAG_FIELDS, VALUE_FIELDS, NotStates, NotValues, Policy
from healer.snapshot import AppSnapshot, Instance

#: (policy, instance, condition) within one app
_AppKey = tuple[str, str, str]
#: (policy, app, instance, condition)
MemoryKey = tuple[str, str, str, str]

#: How many unhealed attempts a policy has made on an instance within a window:
#: ``attempts(policy_name, app_id, instance_id, within) -> int``, or a mapping
#: from (policy_name, app_id, instance_id) to that count.
Attempts = Callable[[str, str, str, timedelta], int] | Mapping[tuple[str, str, str], int] | None


# --- condition memory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionMemory:
    """When each policy's conditions were first seen holding, per policy, app and instance.

    A plain immutable value: evaluation returns a new one. It is grouped by
    app so that the engine can hand one app's part to ``evaluate`` and merge
    the result back cheaply (``for_app`` / ``with_app``).
    """

    apps: Mapping[str, Mapping[_AppKey, datetime]] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, entries: Mapping[MemoryKey, datetime]) -> ConditionMemory:
        apps: dict[str, dict[_AppKey, datetime]] = {}
        for (policy, app, instance, condition), since in entries.items():
            apps.setdefault(app, {})[(policy, instance, condition)] = since
        return cls(apps)

    def entries(self) -> Iterator[tuple[MemoryKey, datetime]]:
        for app, held in self.apps.items():
            for (policy, instance, condition), since in held.items():
                yield (policy, app, instance, condition), since

    def since(self, policy: str, app_id: str, instance_id: str, condition: str) -> datetime | None:
        return self.apps.get(app_id, {}).get((policy, instance_id, condition))

    def __len__(self) -> int:
        return sum(len(held) for held in self.apps.values())

    def for_app(self, app_id: str) -> ConditionMemory:
        """Only this app's entries."""
        held = self.apps.get(app_id)
        return ConditionMemory({app_id: held} if held else {})

    def with_app(self, app_id: str, other: ConditionMemory) -> ConditionMemory:
        """This memory with ``app_id``'s entries replaced by ``other``'s."""
        apps = dict(self.apps)
        held = other.apps.get(app_id)
        if held:
            apps[app_id] = held
        else:
            apps.pop(app_id, None)
        return ConditionMemory(apps)

    def to_json(self) -> str:
        rows = [
            {
                "policy": policy,
                "app_id": app,
                "instance_id": instance,
                "condition": condition,
                "since": since.isoformat(),
            }
            for (policy, app, instance, condition), since in sorted(self.entries())
        ]
        return json.dumps(rows, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ConditionMemory:
        entries = {
            (r["policy"], r["app_id"], r["instance_id"], r["condition"]): datetime.fromisoformat(
                r["since"]
            )
            for r in json.loads(text)
        }
        return cls.from_entries(entries)


@dataclass(frozen=True)
class Evaluation:
    """What evaluating one snapshot gave: proposals in guard order, and the new memory."""

    proposals: list[Proposal]
    memory: ConditionMemory


# --- conditions, compiled once per policy -------------------------------------------------------


class _Facts:
    """What every condition of one snapshot may need, computed once per evaluation."""

    __slots__ = ("by_addr", "by_instance", "events_known", "flags_known", "states_known")

    def __init__(self, snapshot: AppSnapshot) -> None:
        missing = set(snapshot.missing)
        self.states_known = "instance_status" not in missing
        self.events_known = "events" not in missing
        self.flags_known = "disabled" not in missing
        self.by_instance: dict[str, list[Event]] = {}
        self.by_addr: dict[tuple[str, int], list[Event]] = {}
        for event in snapshot.events:
            if not event.firing:
                continue
            if event.instance_id:
                self.by_instance.setdefault(event.instance_id, []).append(event)
            elif event.host_ip and event.port is not None:
                self.by_addr.setdefault((event.host_ip, event.port), []).append(event)

    def events_of(self, inst: Instance) -> list[Event]:
        found = self.by_instance.get(inst.instance_id, [])
        info = inst.info
        if self.by_addr and info.host_ip and info.main_port is not None:
            found = found + self.by_addr.get((info.host_ip, info.main_port), [])
        return found


Test = Callable[[Instance, _Facts], bool]


def _show(values: Sequence[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _values(match: Any) -> tuple[list[str], bool]:
    """(values as written, negated?) from a ``[...]`` or ``{not: [...]}`` condition."""
    if isinstance(match, NotStates | NotValues):
        return list(match.not_), True
    return list(match), False


def _state_test(match: Any) -> tuple[str, Test]:
    values, negate = _values(match)
    accepted = frozenset(values)

    def test(inst: Instance, facts: _Facts) -> bool:
        state = inst.state
        if state is None or not facts.states_known:
            return False
        return (state in accepted) is not negate

    return f"status {'not in' if negate else 'in'} {_show(values)}", test


def _value_test(name: str, match: Any) -> tuple[str, Test]:
    values, negate = _values(match)
    accepted = frozenset(v.upper() for v in values)

    def test(inst: Instance, facts: _Facts) -> bool:
        value = getattr(inst.info, name, None)
        if value is None:
            return False
        text = str(value).strip().upper()
        if not text:
            return False
        return (text in accepted) is not negate

    return f"{name} {'not in' if negate else 'in'} {_show(values)}", test


def _flag_test(name: str, wanted: bool) -> tuple[str, Test]:
    def test(inst: Instance, facts: _Facts) -> bool:
        if name == "disabled":
            # The merged flag is only known when the disabled list loaded.
            return facts.flags_known and inst.disabled is wanted
        value = getattr(inst.info, name, None)
        return value is not None and bool(value) is wanted

    return f"{name} is {'true' if wanted else 'false'}", test


def _event_test(name: str, levels: list[str] | None) -> tuple[str, Test]:
    wanted = frozenset(v.upper() for v in levels) if levels else None

    def test(inst: Instance, facts: _Facts) -> bool:
        if not facts.events_known:
            return False
        for event in facts.events_of(inst):
            if event.name != name:
                continue
            if wanted is None or (event.level is not None and event.level.upper() in wanted):
                return True
        return False

    shown = f"event {name}" + (f" level in {_show(levels)}" if levels else "")
    return shown, test


@dataclass(frozen=True)
class _Compiled:
    policy: Policy
    #: each condition as shown to people, in the order written
    shown: tuple[str, ...]
    #: the same conditions as tests, cheapest and most selective first
    tests: tuple[Test, ...]
    #: the memory key: all conditions, joined
    key: str
    hold_for: timedelta

    def selects(self, meta: AppMeta | None, app_id: str) -> bool:
        return self.policy.select.matches(app_id, meta)


def _compile(policy: Policy) -> _Compiled:
    when = policy.when
    conditions = []
    if when.status is not None:
        conditions.append(_state_test(when.status))
    for name in VALUE_FIELDS:
        match = getattr(when, name)
        if match is not None:
            conditions.append(_value_test(name, match))
    for name in FLAG_FIELDS:
        flag = getattr(when, name)
        if flag is not None:
            conditions.append(_flag_test(name, flag))
    if when.event is not None:
        conditions.append(_event_test(when.event.name, when.event.level))
    shown = tuple(text for text, _ in conditions)
    # `status: [RUNNING]` holds for nearly every instance: test it last.
    tests = tuple(test for _, test in conditions[1:]) + tuple(test for _, test in conditions[:1])
    if when.status is None:
        tests = tuple(test for _, test in conditions)
    return _Compiled(policy, shown, tests, " and ".join(shown), when.for_)


# Policies are immutable; compiled forms are kept per object while it lives.
_CACHE: dict[int, _Compiled] = {}


def _compiled(policy: Policy) -> _Compiled:
    found = _CACHE.get(id(policy))
    if found is not None and found.policy is policy:
        return found
    if len(_CACHE) > 10_000:
        _CACHE.clear()
    found = _compile(policy)
    _CACHE[id(policy)] = found
    return found


# --- selection ----------------------------------------------------------------------------------


def selects(policy: Policy, meta: AppMeta | None, app_id: str) -> bool:
    """Whether the policy applies to the app: every ``select`` field matches, no exclusion does.

    Globs are shell-style and case-sensitive (``web-*``, ``[12]``). A field the
    app's meta lacks matches no glob: the app is not selected by it, and not
    excluded by it either. Maintenance windows and silences match through the
    same ``Select.matches``.
    """
    return policy.select.matches(app_id, meta)


# --- evaluation ---------------------------------------------------------------------------------


def _count_attempts(
    attempts: Attempts, policy: Policy, app_id: str, instance_id: str, within: timedelta
) -> int:
    if attempts is None:
        return 0
    if callable(attempts):
        return int(attempts(policy.name, app_id, instance_id, within))
    return int(attempts.get((policy.name, app_id, instance_id), 0))


def evaluate(
    policies: Sequence[Policy],
    snapshot: AppSnapshot,
    memory: ConditionMemory,
    now: datetime,
    *,
    attempts: Attempts = None,
) -> Evaluation:
    """The proposals of ``policies`` for one app, and the condition memory after this look.

    Memory entries of other apps are kept as they are; this app's entries are
    replaced by the conditions seen holding now. Disabled policies and
    policies that do not select the app propose nothing and remember nothing.
    """
    app_id = snapshot.app_id
    before = memory.apps.get(app_id, {})
    after: dict[_AppKey, datetime] = {}
    proposals: list[Proposal] = []
    facts = _Facts(snapshot)
    instances = list(snapshot.instances.values())

    for policy in policies:
        if not policy.enabled:
            continue
        compiled = _compiled(policy)
        if not compiled.selects(snapshot.meta, app_id):
            continue
        name = policy.name

        # Each test narrows the candidates; the first is the most selective.
        matching = instances
        for test in compiled.tests:
            matching = [inst for inst in matching if test(inst, facts)]
            if not matching:
                break

        for inst in matching:
            key = (name, inst.instance_id, compiled.key)
            since = before.get(key, now)
            after[key] = since
            held = max(now - since, timedelta(0))
            if held < compiled.hold_for:
                continue

            matched = [MatchedCondition(shown, held) for shown in compiled.shown]
            proposals.append(_propose(policy, app_id, inst.instance_id, matched, attempts))

    proposals.sort(key=Proposal.sort_key)
    return Evaluation(proposals, memory.with_app(app_id, ConditionMemory({app_id: after})))


def _propose(
    policy: Policy,
    app_id: str,
    instance_id: str,
    matched: list[MatchedCondition],
    attempts: Attempts,
) -> Proposal:
    """The policy's action on the instance, or its escalation after enough unhealed attempts."""
    action: Action = policy.action.type
    params: dict[str, object] = dict(policy.action.params)
    escalate = policy.escalate
    if escalate is not None:
        tried = _count_attempts(attempts, policy, app_id, instance_id, escalate.within)
        if tried >= escalate.after:
            params.update(escalated_from=action.value, attempts=tried)
            action = escalate.to
    return Proposal(
        policy=policy.rules(),
        app_id=app_id,
        instance_id=instance_id,
        action=action,
        params=params,
        matched=tuple(matched),
    )
