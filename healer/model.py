"""What a policy proposes, handed from policy evaluation to the guard.

A proposal carries the rules of the policy that made it (``PolicyRules``) as a
plain value, so that the guard depends on nothing in the policy language and
the flow stays one-way: policy → proposal → guard → decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from healer.cloudpilot.models import DISRUPTIVE_ACTIONS, Action


@dataclass(frozen=True)
class PolicyRules:
    """The parts of a policy the guard and the engine need to judge its proposals.

    ``None`` means "not set by the policy": the guard's configuration decides.
    """

    name: str
    priority: int = 0
    dry_run: bool = False
    per_cycle: int | None = None
    per_app_per_hour: int | None = None
    instance_cooldown: timedelta | None = None
    max_in_flight: int | None = None
    max_unhealthy: float | None = None  # a share of R in [0, 1]
    verify_timeout: timedelta = timedelta(minutes=10)
    healthy_for: timedelta = timedelta(0)
    escalate_after: int | None = None
    escalate_within: timedelta | None = None
    escalate_to: Action | None = None


@dataclass(frozen=True)
class MatchedCondition:
    """One condition of a policy that held, and for how long it has held."""

    condition: str
    held_for: timedelta


@dataclass(frozen=True)
class Proposal:
    """A policy's wish to act on one instance of one app."""

    policy: PolicyRules
    app_id: str
    instance_id: str
    action: Action
    params: dict[str, object] = field(default_factory=dict)
    matched: tuple[MatchedCondition, ...] = ()

    @property
    def disruptive(self) -> bool:
        return self.action in DISRUPTIVE_ACTIONS

    def sort_key(self) -> tuple[int, str, str, str]:
        """Priority high first, then instance id (DESIGN section 3); ties broken stably."""
        return (-self.policy.priority, self.instance_id, self.policy.name, self.action.value)
