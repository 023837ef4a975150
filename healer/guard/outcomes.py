"""Closing issued actions: did the repair work?

The last step of the flow guard → executor → ledger → verify. The engine (and
``healer test``) calls ``verify`` for every action still pending, in each
later cycle, with the instance as the new snapshot shows it; and
``flapped`` for every action healed less than a probation ago. Both are pure.

What "worked" means depends on the action:

=========================  ==================================================
restart, migrate, repair,  the instance is RUNNING and healthy: process,
start, interrupt           container and agent not in a fault, not migrating,
                           not under repair
enable                     the same, and no longer disabled
disable                    the instance is disabled
stop                       the instance is in STOP
delete                     the instance is gone (or DESTORY)
unfreeze                   the instance is no longer frozen
=========================  ==================================================

It must hold for ``healthy_for`` before the action counts as ``healed``.
An action whose goal does not hold by its verify timeout is ``not_healed``
(which feeds ``escalate``). Decided where DESIGN.md is silent: at the
timeout, an instance whose goal holds *now* is ``healed`` even if it has not
yet held for ``healthy_for`` (the record is closed, C8); an app whose
snapshot could not be read cannot be verified, so past the timeout its
records close as ``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from healer.cloudpilot.models import Action
from healer.guard.ledger import Attempt, Outcome
from healer.model import PolicyRules
from healer.snapshot import DEFAULT_HEALTH, HealthValues, Instance


@dataclass(frozen=True)
class Issued:
    """An issued action as verification needs it; ``healthy_since`` is carried between cycles."""

    app_id: str
    instance_id: str
    action: Action
    issued_at: datetime
    healthy_since: datetime | None = None


@dataclass(frozen=True)
class Verification:
    """The outcome so far (``pending`` until closed), and since when the goal has held."""

    outcome: Outcome
    healthy_since: datetime | None = None

    @property
    def closed(self) -> bool:
        return self.outcome is not Outcome.PENDING


def running_healthy(inst: Instance, health: HealthValues = DEFAULT_HEALTH) -> bool:
    """RUNNING, serving, and agent not in a fault either."""
    return inst.serving(health) and inst.faults(health)["pass_agent_state"] is not False


def goal_holds(
    action: Action, inst: Instance | None, health: HealthValues = DEFAULT_HEALTH
) -> bool:
    """Whether what ``action`` set out to do holds for the instance as seen now."""
    if action is Action.DELETE:
        return inst is None or inst.state == "DESTORY"
    if inst is None:
        return False
    if action is Action.DISABLE:
        return inst.disabled
    if action is Action.STOP:
        return inst.state == "STOP"
    if action is Action.UNFREEZE:
        return not inst.frozen
    return running_healthy(inst, health)


def verify(
    record: Issued,
    instance_now: Instance | None,
    now: datetime,
    rules: PolicyRules,
    *,
    seen: bool = True,
    health: HealthValues = DEFAULT_HEALTH,
) -> Verification:
    """The state of one pending action at ``now``.

    ``instance_now`` is the instance in a complete snapshot (None: not
    there); ``seen`` False means the app's snapshot was incomplete, so
    nothing can be judged but the timeout.
    """
    timed_out = now - record.issued_at >= rules.verify_timeout
    if not seen:
        return Verification(Outcome.UNKNOWN if timed_out else Outcome.PENDING, record.healthy_since)

    if not goal_holds(record.action, instance_now, health):
        return Verification(Outcome.NOT_HEALED if timed_out else Outcome.PENDING, None)

    since = record.healthy_since or now
    if timed_out or now - since >= rules.healthy_for:
        return Verification(Outcome.HEALED, since)
    return Verification(Outcome.PENDING, since)


def flapped(
    action: Action,
    healed_at: datetime,
    instance_now: Instance | None,
    now: datetime,
    probation: timedelta,
    health: HealthValues = DEFAULT_HEALTH,
) -> bool:
    """Whether a healed instance failed again inside its probation (then: ``not_healed``).

    Only actions whose goal is a running, healthy instance can flap; an
    instance gone from the snapshot is not evidence of a fault.
    """
    if action in (Action.DELETE, Action.DISABLE, Action.STOP, Action.UNFREEZE):
        return False
    if instance_now is None or now - healed_at >= probation:
        return False
    return instance_now.unhealthy(health)


#: Outcomes that count as an unhealed attempt for ``escalate``.
UNHEALED: frozenset[Outcome] = frozenset({Outcome.NOT_HEALED, Outcome.FAILED})


def unhealed_counter(
    attempts: Iterable[Attempt], now: datetime
) -> Callable[[str, str, str, timedelta], int]:
    """``count(policy, app, instance, within)``: unhealed attempts in the window, for evaluation.

    ``not_healed`` (including a heal that flapped inside its probation) and
    ``failed`` count; an action still pending does not, yet.
    """
    by_key: dict[tuple[str, str, str], list[datetime]] = {}
    for a in attempts:
        if a.outcome in UNHEALED:
            by_key.setdefault((a.policy, a.app_id, a.instance_id), []).append(a.at)

    def count(policy: str, app_id: str, instance_id: str, within: timedelta) -> int:
        times = by_key.get((policy, app_id, instance_id), [])
        return sum(1 for t in times if now - within < t <= now)

    return count
