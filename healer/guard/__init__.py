"""The safety guard: every proposal passes here before anything is done.

``decide`` judges one sweep's proposals against the snapshots, the ledger's
view and the configuration; ``sweep_health`` judges the fleet brake;
``compute_budget`` the arithmetic of one app's availability budget;
``outcomes.verify`` closes issued actions. See DESIGN.md section 3.
"""

from healer.guard.budget import Budget, compute_budget
from healer.guard.config import GuardConfig, MaintenanceWindow, read_select
from healer.guard.decide import (
    Arithmetic,
    Decision,
    GuardResult,
    Verdict,
    decide,
    sweep_health,
)
from healer.guard.ledger import (
    Attempt,
    BrakeState,
    BucketState,
    InFlight,
    LedgerView,
    Outcome,
    Pause,
    Silence,
)
from healer.guard.reasons import PRECEDENCE, Reason
from healer.policy.model import Select

__all__ = [
    "PRECEDENCE",
    "Arithmetic",
    "Attempt",
    "BrakeState",
    "BucketState",
    "Budget",
    "Decision",
    "GuardConfig",
    "GuardResult",
    "InFlight",
    "LedgerView",
    "MaintenanceWindow",
    "Outcome",
    "Pause",
    "Reason",
    "Select",
    "Silence",
    "Verdict",
    "compute_budget",
    "decide",
    "read_select",
    "sweep_health",
]
