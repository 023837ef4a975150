"""What the guard needs to know from the ledger, as plain frozen values.

The engine fills a ``LedgerView`` from the store before it asks the guard;
the guard reads it and never writes. What the guard wants persisted (a new
fleet-brake state, tokens spent, policies to suspend) comes back in its
``GuardResult`` for the engine to store. This keeps the guard pure and the
flow one-way: ledger → view → guard → result → ledger.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property

from healer.cloudpilot.models import AppMeta
from healer.policy.model import Select


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
    """A one-off silence set by a person: apps matching ``select`` from ``start`` to ``end``.

    ``select`` is a policy selector, matched by the same code as a policy's.
    """

    select: Select
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
class LedgerIndex:
    """The view's records grouped for quick lookups; built once per view, on first use.

    With it, a guard call for one app costs in proportion to that app's
    records, not the whole ledger's, so the engine may hand the same view
    to one call per app.
    """

    in_flight_by_app: Mapping[str, tuple[InFlight, ...]]
    #: Deadlines of disruptive in-flight actions, sorted: the fleet count is one bisect.
    disruptive_deadlines: tuple[datetime, ...]
    attempts_by_app: Mapping[str, tuple[Attempt, ...]]
    #: Per policy, its verified outcomes sorted by time, with running counts of not_healed.
    verified_times: Mapping[str, tuple[datetime, ...]]
    not_healed_before: Mapping[str, tuple[int, ...]]

    @classmethod
    def build(cls, view: LedgerView) -> LedgerIndex:
        in_flight: dict[str, list[InFlight]] = {}
        for rec in view.in_flight:
            in_flight.setdefault(rec.app_id, []).append(rec)
        deadlines = sorted(r.deadline for r in view.in_flight if r.disruptive)

        by_app: dict[str, list[Attempt]] = {}
        verified: dict[str, list[Attempt]] = {}
        for a in view.attempts:
            by_app.setdefault(a.app_id, []).append(a)
            if a.outcome in (Outcome.HEALED, Outcome.NOT_HEALED):
                verified.setdefault(a.policy, []).append(a)
        times: dict[str, tuple[datetime, ...]] = {}
        bad: dict[str, tuple[int, ...]] = {}
        for policy, rows in verified.items():
            rows.sort(key=lambda a: a.at)
            times[policy] = tuple(a.at for a in rows)
            running, counts = 0, [0]
            for a in rows:
                running += a.outcome is Outcome.NOT_HEALED
                counts.append(running)
            bad[policy] = tuple(counts)

        return cls(
            in_flight_by_app={k: tuple(v) for k, v in in_flight.items()},
            disruptive_deadlines=tuple(deadlines),
            attempts_by_app={k: tuple(v) for k, v in by_app.items()},
            verified_times=times,
            not_healed_before=bad,
        )

    def fleet_in_flight(self, now: datetime) -> int:
        """Disruptive actions still open at ``now`` (deadline after it), fleet-wide."""
        return len(self.disruptive_deadlines) - bisect_right(self.disruptive_deadlines, now)

    def verified(self, policy: str, since: datetime, now: datetime) -> tuple[int, int]:
        """(verified outcomes, of which not_healed) of ``policy`` with ``since <= at <= now``."""
        times = self.verified_times.get(policy, ())
        lo, hi = bisect_left(times, since), bisect_right(times, now)
        if hi <= lo:
            return 0, 0
        bad = self.not_healed_before[policy]
        return hi - lo, bad[hi] - bad[lo]


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

    @cached_property
    def index(self) -> LedgerIndex:
        return LedgerIndex.build(self)
