"""Durations as SREs write them in policies: ``90s``, ``5m``, ``1h30m``, ``1d``.

The grammar is Prometheus's: whole numbers, each followed by a unit, units
from largest to smallest and each at most once. ``0`` alone means no time.
Years are left out on purpose: a year has no fixed length.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

#: Units in the order they must appear, with their length.
UNITS: tuple[tuple[str, timedelta], ...] = (
    ("w", timedelta(weeks=1)),
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    ("ms", timedelta(milliseconds=1)),
)

_PART = re.compile(r"(\d+)(ms|w|d|h|m|s)")
_ORDER = {unit: i for i, (unit, _) in enumerate(UNITS)}
_LENGTH = dict(UNITS)

#: A JSON Schema pattern for the same grammar (order is checked only by healer).
DURATION_PATTERN = r"^(0|([0-9]+(ms|w|d|h|m|s))+)$"

HINT = "write a whole number and a unit, like 90s, 5m or 1h30m (units: w, d, h, m, s, ms)"

#: The longest duration healer reads: ten years (520 weeks), far beyond any sane
#: ``for``, pause or look-back, and far inside what ``datetime`` arithmetic allows.
MAX_DURATION = timedelta(weeks=520)
_MAX_MS = MAX_DURATION // timedelta(milliseconds=1)


class DurationError(ValueError):
    """A duration that does not follow the grammar; the message says why."""


def parse_duration(text: str) -> timedelta:
    """``1h30m`` → ``timedelta(hours=1, minutes=30)``; raises DurationError with the reason."""
    s = text.strip()
    if s == "0":
        return timedelta(0)
    if not s:
        raise DurationError(f"empty duration: {HINT}")

    total_ms = 0
    pos = 0
    last = -1
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        unit = m.group(2)
        order = _ORDER[unit]
        if order <= last:
            msg = f"bad duration {_shown(text)}: units must go from largest to smallest, each once"
            raise DurationError(msg)
        last = order
        # Counted in whole milliseconds: Python ints never overflow, timedelta would.
        # Past 18 digits the count is too long whatever its unit (and int() of
        # thousands of digits refuses), so it is not converted at all.
        digits = m.group(1).lstrip("0") or "0"
        count = int(digits) if len(digits) <= 18 else _MAX_MS + 1
        total_ms += count * (_LENGTH[unit] // timedelta(milliseconds=1))
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise DurationError(f"bad duration {_shown(text)}: {HINT}")
    if total_ms > _MAX_MS:
        msg = f"duration {_shown(text)} is too long: at most {format_duration(MAX_DURATION)}"
        raise DurationError(msg + " (10 years)")

    return timedelta(milliseconds=total_ms)


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short when it is very long."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def format_duration(value: timedelta) -> str:
    """The shortest text that ``parse_duration`` reads back as ``value`` (``1h30m``)."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    if ms < 0:
        raise ValueError("negative durations have no text form")
    parts = []
    for unit, length in UNITS:
        size = round(length.total_seconds() * 1000)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _duration(value: Any) -> Any:
    """Text like ``5m`` to a timedelta; bare numbers other than 0 are refused (what unit?)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise ValueError(str(exc)) from None
    msg = f"expected a duration like 90s, 5m or 1h30m, got {value!r}"
    raise ValueError(msg)


#: A duration field of a pydantic model (policies, the guard, the daemon's configuration).
Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}],
            "description": "a duration: 90s, 5m, 1h30m, 1d (units w, d, h, m, s, ms)",
        }
    ),
]
