"""An app's availability budget: ``R`` and how many instances must stay available.

The first thing the guard works out for an app, from the ``min_usable_info``
payload exactly as it arrived (DESIGN section 3). All arithmetic is on exact
decimals and integers: in floating point 14 % of 50 comes out above 7 and
rounds up to 8.

Decisions made where DESIGN.md is silent, each in favour of doing less:

- ``replica`` and ``replica_that_at_least_need_to_keep`` are counts: a value
  that is not a whole number (``2.5``, ``"abc"``, ``true``) is unparseable and
  the budget is unknown. ``replica`` absent falls back to ``total_num``.
- An ``instanceControlBudget`` must name its type exactly ``MinAvailableRatio``
  and carry a value in 0–100; any other type, including an empty object, is a
  type healer does not know. ``null`` means absent.
- A floor above ``R`` is kept as it is: ``required`` may exceed ``R``, and
  then nothing disruptive is possible.
- ``replica`` 0 while ``total_num`` counts instances is a contradiction, not
  a budget of zero (which would let every serving instance be disrupted):
  the budget is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from healer.cloudpilot.models import MinUsableInfo, exact_decimal
from healer.snapshot import AppSnapshot

RATIO_TYPE = "MinAvailableRatio"


@dataclass(frozen=True)
class Budget:
    """``R`` and ``required`` for one app; ``known`` False means no disruptive action.

    When the budget is unknown, ``required`` is ``R`` and ``why`` says what
    was wrong with the payload.
    """

    R: int
    required: int
    known: bool = True
    why: str | None = None


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers, without floating point."""
    return -(-a // b)


def ceil_exact(value: Decimal | Fraction) -> int:
    """The smallest integer not below an exact number (a Decimal is read as its exact ratio)."""
    num, den = value.as_integer_ratio()
    return ceil_div(num, den)


def _count(value: Any) -> int | None:
    """A whole, non-negative count from a payload value, or None."""
    d = exact_decimal(value)
    if d is None or d < 0 or d != d.to_integral_value():
        return None
    return int(d)


def compute_budget(
    source: AppSnapshot | MinUsableInfo | None, total_num: int | None = None
) -> Budget:
    """The budget of an app, from its snapshot or from ``min_usable_info`` and ``total_num``."""
    if isinstance(source, AppSnapshot):
        return compute_budget(source.budget, source.total_num)
    info = source

    # R: the desired count, even while a migration surge shows more instances.
    fallback = total_num if total_num is not None and total_num >= 0 else None
    R: int | None = fallback
    if info is not None and info.replica is not None:
        R = _count(info.replica)
        if R is None:
            return _unknown(fallback or 0, f"replica {info.replica!r} is not a count")
    if R is None:
        return _unknown(0, "neither replica nor total_num is known")
    if R == 0 and fallback:
        return _unknown(fallback, f"replica is 0 but total_num is {fallback}")
    if info is None:
        return _unknown(R, "min_usable_info is missing")

    required = 0

    # The absolute floor.
    if info.replica_that_at_least_need_to_keep is not None:
        floor = _count(info.replica_that_at_least_need_to_keep)
        if floor is None:
            raw = info.replica_that_at_least_need_to_keep
            return _unknown(R, f"replica_that_at_least_need_to_keep {raw!r} is not a count")
        required = max(required, floor)

    # The control budget: a percentage of R.
    cb = info.instanceControlBudget
    if cb is not None:
        if cb.type != RATIO_TYPE:
            return _unknown(R, f"instanceControlBudget type {cb.type!r} is not known")
        ratio = exact_decimal(cb.value)
        if ratio is None or not 0 <= ratio <= 100:
            return _unknown(R, f"MinAvailableRatio value {cb.value!r} is not in 0-100")
        required = max(required, ceil_exact(Fraction(ratio) * R / 100))

    # minUsable: a fraction in (0, 1] or a percentage in (1, 100]; 0 means nothing.
    if info.minUsable is not None:
        mu = exact_decimal(info.minUsable)
        if mu is None or mu < 0 or mu > 100:
            return _unknown(R, f"minUsable {info.minUsable!r} is not in 0-100")
        if 0 < mu <= 1:
            required = max(required, ceil_exact(Fraction(mu) * R))
        elif mu > 1:
            required = max(required, ceil_exact(Fraction(mu) * R / 100))

    return Budget(R=R, required=required)


def _unknown(R: int, why: str) -> Budget:
    return Budget(R=R, required=R, known=False, why=why)
