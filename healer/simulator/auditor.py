"""The auditor: the simulator's record of what the healer did, and what it did wrong.

Every end-to-end test and benchmark judges healer by this report, so it is
computed from the simulator's true state, never from what the healer
believed. An unsafe action is recorded when it is received, whatever its
outcome: asking to restart a frozen instance is unsafe even if CloudPilot
refuses it. Each entry carries the arithmetic that makes it unsafe.

The report's keys are stable: ``faults_injected`` (``total``, ``by_kind``),
``faults_skipped`` (scheduled faults whose target was busy or faulted already),
``actions`` (action → outcome → count), ``actions_by_replica``,
``instances_healed``, ``unsafe_actions`` (a list) and ``unsafe_count``.

``actions`` counts each instance an action call names, once, under one outcome:

- ``success``, ``failed``: the simulator carried the call out (``failed``: no
  such instance, CloudPilot refused it, or a partial failure). A call whose
  answer then hung or came back truncated did run, and is counted here too.
- ``unauthorized`` (answered 401), ``error`` (the injected HTML error page) and
  ``envelope_error`` (an injected envelope whose code is not 0): the call was
  answered with an error and did not run. It is audited all the same, as if it
  had run against the true state at that moment, and its unsafe entries carry
  ``answered``, set to that outcome.

A call whose body names no app and instances, or an unknown app, is answered
with an error and counted under ``requests`` only.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from healer.cloudpilot.models import DISRUPTIVE_ACTIONS, Action
from healer.simulator.fleet import SimApp, SimInstance

#: The kinds of unsafe action, in the order they are reported for one instance.
UNSAFE_KINDS: tuple[str, ...] = (
    "not_leader",
    "frozen",
    "disabled",
    "under_repair",
    "migrating",
    "in_flight",
    "below_required",
)

DISRUPTIVE: frozenset[str] = frozenset(a.value for a in DISRUPTIVE_ACTIONS)

#: Outcomes of an action call answered with an error, which did not run.
UNAUTHORIZED = "unauthorized"
ERROR = "error"
ENVELOPE_ERROR = "envelope_error"
REFUSED_OUTCOMES: tuple[str, ...] = (UNAUTHORIZED, ERROR, ENVELOPE_ERROR)


def instance_guard_kinds(app: SimApp, inst: SimInstance, action: str) -> list[str]:
    """The unsafe kinds an action commits by touching ``inst`` in its current state."""
    kinds: list[str] = []
    if inst.frozen and action != Action.UNFREEZE:
        kinds.append("frozen")
    if app.is_disabled(inst) and action != Action.ENABLE:
        kinds.append("disabled")
    if inst.under_repair:
        kinds.append("under_repair")
    if inst.migrating:
        kinds.append("migrating")
    if action in DISRUPTIVE and inst.op is not None and inst.op.by_request:
        kinds.append("in_flight")
    return kinds


class Auditor:
    """Counts actions, faults and heals, and lists every unsafe action."""

    def __init__(self) -> None:
        self.faults_by_kind: Counter[str] = Counter()
        self.faults_skipped: Counter[str] = Counter()
        self.instances_faulted = 0
        self.actions: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.by_replica: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.instances_healed = 0
        self.healed_by_action: Counter[str] = Counter()
        self.unsafe: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.api_faults: Counter[str] = Counter()

    def fault(self, kind: str, instances: int) -> None:
        self.faults_by_kind[kind] += 1
        self.instances_faulted += instances

    def fault_skipped(self, kind: str) -> None:
        """A scheduled fault whose target was busy or faulted already: not injected."""
        self.faults_skipped[kind] += 1

    def action(self, action: str, outcome: str, replica: str | None) -> None:
        self.actions[action][outcome] += 1
        self.by_replica[replica or "-"][action] += 1

    def healed(self, action: str | None) -> None:
        self.instances_healed += 1
        self.healed_by_action[action or "-"] += 1

    def unsafe_action(self, kind: str, **details: Any) -> None:
        self.unsafe.append({"kind": kind, **details})

    def report(self) -> dict[str, Any]:
        """The auditor's findings as plain JSON."""
        return {
            "faults_injected": {
                "total": sum(self.faults_by_kind.values()),
                "by_kind": dict(sorted(self.faults_by_kind.items())),
                "instances": self.instances_faulted,
            },
            "faults_skipped": {
                "total": sum(self.faults_skipped.values()),
                "by_kind": dict(sorted(self.faults_skipped.items())),
            },
            "actions": {a: dict(sorted(c.items())) for a, c in sorted(self.actions.items())},
            "actions_by_replica": {
                r: dict(sorted(c.items())) for r, c in sorted(self.by_replica.items())
            },
            "instances_healed": self.instances_healed,
            "healed_by_action": dict(sorted(self.healed_by_action.items())),
            "unsafe_actions": list(self.unsafe),
            "unsafe_count": len(self.unsafe),
            "unsafe_by_kind": dict(sorted(Counter(u["kind"] for u in self.unsafe).items())),
            "requests": dict(sorted(self.requests.items())),
            "api_faults": dict(sorted(self.api_faults.items())),
        }
