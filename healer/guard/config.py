"""The guard's settings: limits, brakes, masks and maintenance windows.

Everything the guard weighs that is not in a snapshot, a proposal or the
ledger comes from here. It is part of the daemon's configuration file (key
``guard``) and of a ``healer test`` case (key ``config``). Unknown keys are
errors, as in policy files.

Decisions made where DESIGN.md is silent, each in favour of doing less:

- A maintenance window is either daily (``start``/``end`` as ``HH:MM``, an
  end earlier than the start wraps past midnight, optional ``days`` naming
  the weekdays a window *starts* on) or one-off (ISO date-times; naive ones
  are read in the window's time zone). Ends are exclusive; a window whose
  start equals its end is a configuration error, and so is a one-off window
  that ends before it starts.
- The API error rate only counts once a sweep made ``api_error_min_calls``
  calls: one failed call out of five says nothing about the fleet.
- The fleet-wide cap on concurrent actions and the token bucket limit
  disruptive actions only, like the per-app ``max_in_flight``: restoring an
  instance never needs a slot.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from healer.cloudpilot.models import Action, AppMeta
from healer.policy.durations import Duration
from healer.snapshot import DEFAULT_HEALTHY_VALUES, HealthValues


def _glob_list(value: Any) -> Any:
    # A single value is a one-element list; numbers (service levels) become text.
    if value is None:
        return []
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value


Globs = Annotated[list[str], BeforeValidator(_glob_list)]

CapacityEffect = Literal["shrink", "extend", "none"]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(Strict):
    """Which apps: globs on the app's meta, as in a policy's ``select``.

    An empty selector matches every app. Each listed field must match one of
    its globs; ``exclude_app_ids`` removes apps again::

        select: {product: [search], service_level: [1, 2], exclude_app_ids: ["pay-*"]}
    """

    product: Globs = Field(default_factory=list)
    module: Globs = Field(default_factory=list)
    cluster: Globs = Field(default_factory=list)
    service_level: Globs = Field(default_factory=list)
    pass_type: Globs = Field(default_factory=list)
    app_id: Globs = Field(default_factory=list)
    app_ids: Globs = Field(default_factory=list)
    exclude_app_ids: Globs = Field(default_factory=list)

    def matches(self, app_id: str, meta: AppMeta | None) -> bool:
        def one(value: Any, globs: list[str]) -> bool:
            if not globs:
                return True
            text = "" if value is None else str(value)
            return any(fnmatch.fnmatchcase(text, g) for g in globs)

        if any(fnmatch.fnmatchcase(app_id, g) for g in self.exclude_app_ids):
            return False
        if not one(app_id, self.app_id + self.app_ids):
            return False
        m = meta or AppMeta()
        return (
            one(m.product, self.product)
            and one(m.module, self.module)
            and one(m.cluster, self.cluster)
            and one(m.service_level, self.service_level)
            and one(m.pass_type, self.pass_type)
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


class MaintenanceWindow(Strict):
    """A time when matching apps are left alone (``silenced``).

    Daily, in a named time zone, end exclusive::

        - {name: nightly-deploys, select: {product: [search]}, timezone: Asia/Shanghai,
           start: "22:00", end: "02:00", days: [mon, tue, wed, thu, fri]}

    or once, with date-times: ``start: 2026-05-01T00:00, end: 2026-05-04T00:00``.
    """

    name: str = "maintenance"
    select: Selector = Field(default_factory=Selector)
    timezone: str = "UTC"
    start: str
    end: str
    days: list[str] | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        _zone(v)
        return v

    @field_validator("start", "end", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # YAML reads 22:00 as a sexagesimal number and ISO stamps as datetimes.
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v // 60:02d}:{v % 60:02d}"
        return v

    @field_validator("days")
    @classmethod
    def _weekdays(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        out = [d.strip().lower()[:3] for d in v]
        bad = [d for d in out if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"unknown weekday(s) {bad}; use {', '.join(WEEKDAYS)}")
        return out

    @model_validator(mode="after")
    def _sane(self) -> MaintenanceWindow:
        daily = self._daily_bounds()
        if daily is not None:
            if daily[0] == daily[1]:
                raise ValueError(f"window {self.name!r}: start equals end")
            return self
        start, end = self._once_bounds()
        if start == end:
            raise ValueError(f"window {self.name!r}: start equals end")
        if end < start:
            raise ValueError(f"window {self.name!r}: end before start")
        if self.days is not None:
            raise ValueError(f"window {self.name!r}: days apply to daily windows only")
        return self

    def _daily_bounds(self) -> tuple[time, time] | None:
        try:
            return time.fromisoformat(self.start), time.fromisoformat(self.end)
        except ValueError:
            return None

    def _once_bounds(self) -> tuple[datetime, datetime]:
        zone = _zone(self.timezone)
        try:
            start, end = datetime.fromisoformat(self.start), datetime.fromisoformat(self.end)
        except ValueError as exc:
            msg = f"window {self.name!r}: start and end must both be HH:MM or both date-times"
            raise ValueError(msg) from exc
        if start.tzinfo is None:
            start = start.replace(tzinfo=zone)
        if end.tzinfo is None:
            end = end.replace(tzinfo=zone)
        return start, end

    def active(self, now: datetime) -> bool:
        """Whether ``now`` (aware) falls inside the window; the end is exclusive."""
        daily = self._daily_bounds()
        if daily is None:
            start, end = self._once_bounds()
            return start <= now < end

        local = now.astimezone(_zone(self.timezone))
        t = local.time().replace(tzinfo=None)
        lo, hi = daily
        if lo < hi:
            inside, started = lo <= t < hi, local
        elif t >= lo:
            inside, started = True, local
        else:
            # Wrapped past midnight: the window began the day before.
            inside, started = t < hi, local - timedelta(days=1)
        if not inside:
            return False
        return self.days is None or WEEKDAYS[started.weekday()] in self.days


class FleetBucket(Strict):
    """A fleet-wide token bucket for disruptive actions: refill per hour, and size."""

    rate_per_hour: float = Field(default=600.0, ge=0)
    burst: int = Field(default=30, ge=0)


class Suspension(Strict):
    """When a policy is suspended: within ``window``, at least ``min_actions`` verified
    outcomes of which more than ``not_healed_share`` ended ``not_healed``."""

    window: Duration = timedelta(hours=6)
    min_actions: int = Field(default=5, ge=1)
    not_healed_share: float = Field(default=0.5, ge=0, le=1)


#: Which action changes capacity how (DESIGN section 3): delete shrinks, nothing extends.
DEFAULT_CAPACITY_EFFECTS: dict[Action, CapacityEffect] = {
    a: ("shrink" if a is Action.DELETE else "none") for a in Action
}


class GuardConfig(Strict):
    """Every setting of the safety guard, with the defaults of DESIGN section 3."""

    # Limits.
    max_in_flight: int = Field(default=1, ge=0)
    fleet_max_in_flight: int | None = Field(default=50, ge=0)
    instance_cooldown: Duration = timedelta(0)
    bucket: FleetBucket = Field(default_factory=FleetBucket)

    # Brakes.
    max_unhealthy: float = Field(default=0.5, ge=0, le=1)
    fleet_brake_share: float = Field(default=0.2, ge=0, le=1)
    fleet_brake_min_apps: int = Field(default=5, ge=1)
    api_error_rate: float = Field(default=0.25, ge=0, le=1)
    api_error_min_calls: int = Field(default=20, ge=1)
    clear_sweeps: int = Field(default=3, ge=1)
    rollout_check: bool = True

    # What the actions do and what healthy means.
    capacity_effects: dict[Action, CapacityEffect] = Field(
        default_factory=lambda: dict(DEFAULT_CAPACITY_EFFECTS)
    )
    healthy_values: list[str] = Field(default_factory=lambda: sorted(DEFAULT_HEALTHY_VALUES))

    # Learning from outcomes.
    probation: Duration = timedelta(minutes=30)
    suspension: Suspension = Field(default_factory=Suspension)

    # Switches.
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)

    @field_validator("capacity_effects")
    @classmethod
    def _every_action(cls, v: dict[Action, CapacityEffect]) -> dict[Action, CapacityEffect]:
        # A partial table keeps the default for the actions it does not name.
        return {**DEFAULT_CAPACITY_EFFECTS, **v}

    @property
    def health(self) -> HealthValues:
        return HealthValues(frozenset(v.strip().upper() for v in self.healthy_values))

    def effect(self, action: Action) -> CapacityEffect:
        return self.capacity_effects.get(action, "none")

    def silenced_by(self, app_id: str, meta: AppMeta | None, now: datetime) -> str | None:
        """The name of the first active window matching the app, or None."""
        for w in self.maintenance_windows:
            if w.active(now) and w.select.matches(app_id, meta):
                return w.name
        return None
