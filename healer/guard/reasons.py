"""The guard's reason codes and the order in which they win.

A refused proposal carries exactly one code. When several apply, the first in
``PRECEDENCE`` is reported (DESIGN section 3): fleet and app switches, then
app state, the instance, masks, limits, and the budget last.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why the guard refused a proposal."""

    NOT_LEADER = "not_leader"
    PAUSED = "paused"
    SILENCED = "silenced"
    STALE_SNAPSHOT = "stale_snapshot"
    FLEET_BRAKE = "fleet_brake"
    BUDGET_UNKNOWN = "budget_unknown"
    ROLLOUT = "rollout"
    SHORT_CIRCUIT = "short_circuit"
    FROZEN = "frozen"
    DISABLED = "disabled"
    UNDER_REPAIR = "under_repair"
    MIGRATING = "migrating"
    IN_FLIGHT = "in_flight"
    SHRINK_MASK = "shrink_mask"
    EXTEND_MASK = "extend_mask"
    POLICY_SUSPENDED = "policy_suspended"
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate_limit"
    MAX_IN_FLIGHT = "max_in_flight"
    BUDGET = "budget"


#: The order of DESIGN section 3; the enum is declared in it.
PRECEDENCE: tuple[Reason, ...] = tuple(Reason)
