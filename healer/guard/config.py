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
  start equals its end is a configuration error (reported on ``end``), and so
  is a one-off window that ends before it starts.
- A window's ``select`` is a policy's (``healer.policy.model.Select``, matched
  by the same code): globs on product, module, cluster, service_level,
  pass_type and app_id, ``exclude`` and ``exclude_app_ids``; a field the
  app's meta lacks matches no glob. The old window key ``app_ids`` is still
  read, as ``app_id``.
- The API error rate only counts once a sweep made ``api_error_min_calls``
  calls: one failed call out of five says nothing about the fleet.
- The fleet-wide cap on concurrent actions and the token bucket limit
  disruptive actions only, like the per-app ``max_in_flight``: restoring an
  instance never needs a slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from healer.cloudpilot.models import Action, AppMeta
from healer.policy.durations import Duration
from healer.policy.model import Select
from healer.snapshot import DEFAULT_HEALTHY_VALUES, HealthValues

CapacityEffect = Literal["shrink", "extend", "none"]

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def legacy_select(value: Any) -> Any:
    """Read a window's or a stored silence's ``select`` written before it was a policy selector.

    Windows used to say ``app_ids``; it meant what ``app_id`` means (globs on
    the app id), so it is read as ``app_id`` (joined to any ``app_id`` globs
    given too) rather than breaking a configuration that worked. Everything
    else is the policy selector's: an empty list, an unknown key or a missing
    meta field mean there what they mean in a policy.
    """
    if not isinstance(value, Mapping) or "app_ids" not in value:
        return value
    out = dict(value)
    old = out.pop("app_ids")
    old = old if isinstance(old, list) else [old] if old is not None else []
    if not old:
        raise ValueError("select.app_ids (read as app_id) needs at least one glob")
    new = out.get("app_id")
    if new is None:
        out["app_id"] = old
    elif isinstance(new, list):
        out["app_id"] = [*new, *old]
    else:
        out["app_id"] = [new, *old]
    return out


#: A window's ``select``: the policy selector, with the old ``app_ids`` read as ``app_id``.
WindowSelect = Annotated[Select, BeforeValidator(legacy_select)]


def read_select(raw: Any) -> Select:
    """A stored silence's selector as a policy selector (old ``app_ids`` read as ``app_id``).

    Raises ValueError (a pydantic ValidationError among them) when it is not one.
    """
    return Select.model_validate(legacy_select(raw))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _daily_bounds(start: str, end: str) -> tuple[time, time] | None:
    """``HH:MM`` bounds of a daily window, or None when they are not both times of day."""
    try:
        return time.fromisoformat(start), time.fromisoformat(end)
    except ValueError:
        return None


def _once_bounds(name: str, start: str, end: str, zone_name: str) -> tuple[datetime, datetime]:
    """Aware bounds of a one-off window; naive date-times are read in the window's zone."""
    zone = _zone(zone_name)
    try:
        lo, hi = datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError as exc:
        msg = f"window {name!r}: start and end must both be HH:MM or both date-times"
        raise ValueError(msg) from exc
    if lo.tzinfo is None:
        lo = lo.replace(tzinfo=zone)
    if hi.tzinfo is None:
        hi = hi.replace(tzinfo=zone)
    return lo, hi


class MaintenanceWindow(Strict):
    """A time when matching apps are left alone (``silenced``).

    Daily, in a named time zone, end exclusive::

        - {name: nightly-deploys, select: {product: [search]}, timezone: Asia/Shanghai,
           start: "22:00", end: "02:00", days: [mon, tue, wed, thu, fri]}

    or once, with date-times: ``start: 2026-05-01T00:00, end: 2026-05-04T00:00``.
    """

    name: str = "maintenance"
    select: WindowSelect = Field(default_factory=Select)
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

    @field_validator("end")
    @classmethod
    def _lasts(cls, end: str, info: ValidationInfo) -> str:
        # Checked on `end`, so that the error names the key to fix.
        start = info.data.get("start")
        if start is None:
            return end  # `start` itself is wrong, and says so
        name = info.data.get("name", "maintenance")
        daily = _daily_bounds(start, end)
        if daily is not None:
            if daily[0] == daily[1]:
                msg = (
                    f"window {name!r}: end equals start ({start}); a daily window needs an end "
                    "other than its start (an earlier end wraps past midnight)"
                )
                raise ValueError(msg)
            return end
        # An unknown zone is reported on `timezone`; compare in UTC meanwhile.
        lo, hi = _once_bounds(name, start, end, info.data.get("timezone", "UTC"))
        if lo == hi:
            raise ValueError(f"window {name!r}: end equals start ({start}); the window is empty")
        if hi < lo:
            raise ValueError(f"window {name!r}: end ({end}) is before start ({start})")
        return end

    @model_validator(mode="after")
    def _days_are_daily(self) -> MaintenanceWindow:
        if self.days is not None and self._daily_bounds() is None:
            raise ValueError(f"window {self.name!r}: days apply to daily windows only")
        return self

    def _daily_bounds(self) -> tuple[time, time] | None:
        return _daily_bounds(self.start, self.end)

    def _once_bounds(self) -> tuple[datetime, datetime]:
        return _once_bounds(self.name, self.start, self.end, self.timezone)

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
