"""What the guard needs to know from the ledger, as plain frozen values.

The engine fills a ``LedgerView`` from the store before it asks the guard;
the guard reads it and never writes. What the guard wants persisted (a new
fleet-brake state, tokens spent, policies to suspend) comes back in its
``GuardResult`` for the engine to store. This keeps the guard pure and the
flow one-way: ledger → view → guard → result → ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from healer.cloudpilot.models import AppMeta
from healer.guard.config import Selector


class Outcome(StrEnum):
    """How an issued action ended (``pending`` until it is verified or times out)."""

    PENDING = "pending"
    HEALED = "healed"
    NOT_HEALED = "not_healed"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class InFlight:
    """An issued action with no final outcome yet; in flight until ``deadline`` (exclusive)."""

    app_id: str
    instance_id: str
    action: str
    policy: str
    issued_at: datetime
    deadline: datetime
    disruptive: bool = True

    def open_at(self, now: datetime) -> bool:
        return now < self.deadline


@dataclass(frozen=True)
class Attempt:
    """One action healer issued, with what came of it so far (for limits and escalation)."""

    app_id: str
    instance_id: str
    policy: str
    action: str
    at: datetime
    outcome: Outcome = Outcome.PENDING


@dataclass(frozen=True)
class Pause:
    """A kill switch, global when ``app_id`` is None; active until ``until`` (None: resumed)."""

    who: str
    why: str
    until: datetime | None = None
    app_id: str | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Silence:
    """A one-off silence set by a person: apps matching ``select`` from ``start`` to ``end``."""

    select: Selector
    start: datetime
    end: datetime
    who: str = ""
    why: str = ""

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError("a silence must end after it starts")

    def silences(self, app_id: str, meta: AppMeta | None, now: datetime) -> bool:
        return self.start <= now < self.end and self.select.matches(app_id, meta)


@dataclass(frozen=True)
class BucketState:
    """The fleet token bucket: ``tokens`` as of ``updated_at`` (None: never used, so full)."""

    tokens: float = 0.0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class BrakeState:
    """The fleet brake after a sweep: engaged, and how many clear sweeps it has seen since."""

    engaged: bool = False
    clear_sweeps: int = 0
    why: str | None = None


@dataclass(frozen=True)
class LedgerView:
    """The ledger as the guard sees it at one moment."""

    in_flight: tuple[InFlight, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    pauses: tuple[Pause, ...] = ()
    silences: tuple[Silence, ...] = ()
    suspended_policies: frozenset[str] = frozenset()
    #: When a person last resumed each policy: outcomes before it no longer count.
    resumed_at: Mapping[str, datetime] = field(default_factory=dict)
    bucket: BucketState = field(default_factory=BucketState)
    fleet_brake: BrakeState = field(default_factory=BrakeState)
    #: The share of CloudPilot calls that failed in the last sweep (None: too few to judge).
    api_error_rate: float | None = None
    api_calls: int | None = None
    leader: bool = True
