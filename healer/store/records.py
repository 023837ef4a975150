"""The values that go into the store and come out of it.

The engine hands the store *rows* (what it decided, what it is about to do) and
reads back *records* (the same, with the id and the outcome the store keeps).
All of them are frozen dataclasses: they are plain values passed between the
engine, the guard and the HTTP API, and the database already checks their
types, so pydantic validation would only cost time on the hot path. Every
time is timezone-aware UTC; the store refuses naive datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """Where one issued action is in its life.

    ``issued`` is written before CloudPilot is called; the call answers
    ``in_flight`` (accepted), ``failed`` (refused by CloudPilot) or ``unknown``
    (the instance was in neither answer list, or the call timed out);
    verification then ends it ``healed``, ``not_healed`` or ``expired``
    (its deadline passed with nobody able to tell). A ``healed`` action whose
    instance fails again inside its probation becomes ``not_healed``; no other
    final outcome ever changes.
    """

    ISSUED = "issued"
    IN_FLIGHT = "in_flight"
    FAILED = "failed"
    UNKNOWN = "unknown"
    HEALED = "healed"
    NOT_HEALED = "not_healed"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in FINAL_OUTCOMES


#: Outcomes of an action that may still be acting on its instance.
OPEN_OUTCOMES: frozenset[Outcome] = frozenset({Outcome.ISSUED, Outcome.IN_FLIGHT, Outcome.UNKNOWN})

#: Outcomes after which nothing changes any more.
FINAL_OUTCOMES: frozenset[Outcome] = frozenset(
    {Outcome.FAILED, Outcome.HEALED, Outcome.NOT_HEALED, Outcome.EXPIRED}
)

#: Which outcome may follow which. A final outcome is never overwritten.
TRANSITIONS: dict[Outcome, frozenset[Outcome]] = {
    # After a crash the engine may go straight from issued to a verdict.
    Outcome.ISSUED: frozenset(Outcome) - {Outcome.ISSUED},
    Outcome.IN_FLIGHT: frozenset({Outcome.HEALED, Outcome.NOT_HEALED, Outcome.EXPIRED}),
    # An unknown outcome can be cleared up by a later look at the instance.
    Outcome.UNKNOWN: frozenset(
        {Outcome.IN_FLIGHT, Outcome.HEALED, Outcome.NOT_HEALED, Outcome.EXPIRED}
    ),
    # A heal that fails again inside its probation did not hold (flap damping).
    Outcome.HEALED: frozenset({Outcome.NOT_HEALED}),
}


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One guard decision about one proposal, as the engine writes it.

    ``decision`` is ``approved``, ``refused`` or ``dry_run``; ``reason`` is the
    guard's reason code for a refusal. ``arithmetic`` is the budget arithmetic
    behind it and ``matched`` the conditions that held; both are stored as JSON.
    """

    at: datetime
    app_id: str
    instance_id: str | None
    policy: str
    action: str
    decision: str
    reason: str | None = None
    arithmetic: dict[str, Any] = field(default_factory=dict)
    matched: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A stored decision."""

    id: int
    at: datetime
    app_id: str
    instance_id: str | None
    policy: str
    action: str
    decision: str
    reason: str | None
    arithmetic: dict[str, Any]
    matched: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One action on one instance, written as ``issued`` before CloudPilot is called.

    ``deadline`` is when the action stops counting as in flight if no outcome
    arrives (a crash between the write and the call); ``replica`` names the
    healer replica that issued it.
    """

    app_id: str
    instance_id: str
    policy: str
    action: str
    params: dict[str, Any]
    issued_at: datetime
    deadline: datetime
    fault_seen_at: datetime | None = None
    replica: str | None = None
    arithmetic: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """A stored action with its latest outcome."""

    id: int
    app_id: str
    instance_id: str
    policy: str
    action: str
    params: dict[str, Any]
    issued_at: datetime
    deadline: datetime
    fault_seen_at: datetime | None
    replica: str | None
    arithmetic: dict[str, Any]
    outcome: Outcome
    outcome_at: datetime | None
    detail: str | None

    @property
    def open(self) -> bool:
        """No final outcome yet."""
        return self.outcome in OPEN_OUTCOMES

    def in_flight_at(self, now: datetime) -> bool:
        """Whether the action still counts as acting on its instance at ``now``.

        An open action counts until its deadline, whether or not the daemon
        that issued it is still alive: a restart never sends an action twice.
        """
        return self.open and now < self.deadline


@dataclass(frozen=True, slots=True)
class PauseRecord:
    """A pause of all actions (``app_id`` None) or of one app's actions."""

    id: int
    app_id: str | None
    who: str
    why: str
    created_at: datetime
    until: datetime | None
    removed_at: datetime | None
    removed_by: str | None


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """A maintenance window or silence: apps matching ``selector`` get no actions."""

    id: int
    selector: dict[str, Any]
    start: datetime
    end: datetime
    tz: str
    who: str
    why: str
    created_at: datetime
    removed_at: datetime | None
    removed_by: str | None
