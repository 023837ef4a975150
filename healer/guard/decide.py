"""The safety guard: one decision for every proposal, exactly as DESIGN section 3 says.

It sits between policy evaluation and the executor: proposals in, decisions
out, nothing done. ``decide`` is a pure function of the sweep's snapshots,
the ledger's view, the proposals, the configuration and the time; it reads
no clock and calls nothing. Each decision carries the arithmetic behind it
so that people can be shown why.

How one sweep is judged:

1. Per app, from its complete snapshot: the budget (``R``, ``required``),
   which instances are available (serving, and no healer action on them in
   flight), how many are unhealthy, whether a rollout is in progress.
2. Proposals are taken in one fixed order — policy priority high first,
   then instance id (then policy, action and app, so that the order they
   arrived in never matters) — and each gets the first reason that applies,
   in the precedence order of ``reasons.PRECEDENCE``.
3. Only an approved proposal spends: budget, an in-flight slot, a rate-limit
   count, a token. A refused one changes nothing for those after it.

Decisions made where DESIGN.md is silent, each in favour of doing less:

- Dry-run proposals are judged after all others, against what is left, and
  spend nothing; their decision is ``dry_run`` with the reason the guard
  *would* have refused them for (None when it would have approved).
- A proposal for an instance the snapshot does not hold is ``stale_snapshot``.
- Fleet brake, app state (``budget_unknown``, ``rollout``, ``short_circuit``),
  ``max_in_flight``, the token bucket and ``budget`` hold back disruptive
  actions only: a restorative action or ``interrupt`` cannot lower
  availability, and refusing it for an app below its budget would keep the
  app there. Instance guards, masks, switches, cooldowns and the policy's own
  rate limits apply to every action.
- An action that costs nothing is never refused ``budget``: it cannot take
  the app below its budget, and refusing it would leave an app that is
  already below (R = 1 with its only instance down: available 0, required
  1) unhealable, against "a small app can always be healed within its
  budget". Every action that costs 1 needs ``available − spent − 1 ≥
  required``.
- An instance named in no top-five list while the app has unnamed
  non-RUNNING instances has no known state. It is not counted available, yet
  a disruptive action on it costs 1, as if it were: it may be serving. So
  only an instance known to be out of service is ever acted on for free.
- A missing ``shrink_mask`` / ``extend_mask`` in the app's meta is taken as
  true: an action with that capacity effect is refused.
- ``max_in_flight`` counts the app's disruptive actions in flight, from any
  policy; the limit is the proposing policy's when it sets one, else the
  configuration's. A cooldown is per instance, whichever policy acted; the
  policy's ``per_cycle`` and ``per_app_per_hour`` count that policy's own
  actions on the app, and refusals for them are ``rate_limit``.
- An in-flight record counts until its deadline; after it, it no longer
  holds the instance even if nothing closed it (C8).
- A policy is suspended when the ledger says so, or when, within the
  configured window (and since a person last resumed it), it has at least
  ``min_actions`` verified outcomes of which more than the configured share
  are ``not_healed``. Only policies with proposals in the call are judged;
  those newly over the line come back in ``GuardResult.suspend`` for the
  engine to persist until a person resumes them.
- The fleet brake is applied as the ledger gives it unless ``whole_sweep``
  is true: only a call that sees a whole sweep may judge the fleet, so a
  per-app cycle can never release the brake by counting itself as a sweep.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from fractions import Fraction

from healer.cloudpilot.models import Action
from healer.guard.budget import Budget, compute_budget
from healer.guard.config import GuardConfig
from healer.guard.ledger import (
    BrakeState,
    BucketState,
    LedgerView,
)
from healer.guard.reasons import Reason
from healer.model import Proposal
from healer.snapshot import AppSnapshot, HealthValues

HOUR = timedelta(hours=1)


class Verdict(StrEnum):
    APPROVED = "approved"
    REFUSED = "refused"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class Arithmetic:
    """The numbers behind a decision, for people to read.

    ``available`` is counted at the start of the sweep; ``spent_before`` is
    what proposals approved before this one in the same sweep already took;
    ``in_flight`` the app's disruptive actions in flight, those approved
    before this one included.
    """

    R: int
    required: int
    available: int
    cost: int
    spent_before: int
    in_flight: int
    unhealthy: int
    unhealthy_share: float | None
    budget_known: bool = True


@dataclass(frozen=True)
class Decision:
    """The guard's answer to one proposal."""

    proposal: Proposal
    outcome: Verdict
    reason: Reason | None = None
    arithmetic: Arithmetic | None = None
    detail: str | None = None

    @property
    def approved(self) -> bool:
        return self.outcome is Verdict.APPROVED


@dataclass(frozen=True)
class GuardResult:
    """All decisions of one call, in the order the proposals came, and what to persist."""

    decisions: tuple[Decision, ...]
    brake: BrakeState
    bucket: BucketState
    tokens_spent: int = 0
    short_circuited: frozenset[str] = frozenset()
    stale: frozenset[str] = frozenset()
    #: Policies that crossed the suspension threshold in this call (not yet in the ledger).
    suspend: frozenset[str] = frozenset()

    @property
    def approved(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome is Verdict.APPROVED]

    @property
    def refused(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome is Verdict.REFUSED]


def _share(value: float) -> Fraction:
    """A configured share read as its decimal text, so that 0.8 is exactly 4/5."""
    return Fraction(repr(float(value)))


def _over_share(count: int, whole: int, share: Fraction) -> bool:
    """``count / whole > share`` in integers; any count of a whole of 0 is over."""
    if whole <= 0:
        return count > 0
    return count * share.denominator > whole * share.numerator


@dataclass(frozen=True)
class _Census:
    """One pass over an app's instances: which serve, how many are unhealthy."""

    serving: frozenset[str]
    unhealthy: int


def _census(snap: AppSnapshot, health: HealthValues) -> _Census:
    serving = frozenset(iid for iid, inst in snap.instances.items() if inst.serving(health))
    return _Census(serving, snap.unhealthy_count(health))


def sweep_health(
    snapshots: Mapping[str, AppSnapshot],
    api_error_rate: float | None,
    prev: BrakeState,
    config: GuardConfig,
    *,
    api_calls: int | None = None,
) -> BrakeState:
    """The fleet brake after one whole sweep (DESIGN section 3, ``fleet_brake``).

    It engages when more than ``fleet_brake_share`` of the enrolled apps (and
    at least ``fleet_brake_min_apps``) have unhealthy instances, or when the
    API error rate passes ``api_error_rate`` over at least
    ``api_error_min_calls`` calls; it releases after ``clear_sweeps`` clear
    sweeps in a row. ``snapshots`` holds every enrolled app of the sweep.
    """
    health = config.health
    censuses = {a: _census(s, health) for a, s in snapshots.items() if s.complete}
    return _judge_fleet(snapshots, censuses, api_error_rate, prev, config, api_calls)


def _judge_fleet(
    snapshots: Mapping[str, AppSnapshot],
    censuses: Mapping[str, _Census],
    api_error_rate: float | None,
    prev: BrakeState,
    config: GuardConfig,
    api_calls: int | None,
) -> BrakeState:
    sick = sum(1 for c in censuses.values() if c.unhealthy)
    enrolled = len(snapshots)
    why: str | None = None
    if sick >= config.fleet_brake_min_apps and _over_share(
        sick, enrolled, _share(config.fleet_brake_share)
    ):
        why = f"{sick} of {enrolled} apps have unhealthy instances"
    enough_calls = api_calls is None or api_calls >= config.api_error_min_calls
    rate = api_error_rate
    if (
        why is None
        and rate is not None
        and enough_calls
        and _share(rate) > _share(config.api_error_rate)
    ):
        why = f"API error rate {api_error_rate:.0%}"

    if why is not None:
        return BrakeState(engaged=True, clear_sweeps=0, why=why)
    if not prev.engaged:
        return BrakeState()
    clear = prev.clear_sweeps + 1
    if clear >= config.clear_sweeps:
        return BrakeState()
    return BrakeState(engaged=True, clear_sweeps=clear, why=prev.why)


@dataclass
class _App:
    """One app's state during a sweep: fixed facts first, then what approvals spent."""

    app_id: str
    snapshot: AppSnapshot | None
    budget: Budget
    available: frozenset[str]
    unhealthy: int
    rollout: bool
    switch: tuple[Reason, str] | None
    busy: set[str]
    in_flight: int
    last_touch: dict[str, datetime] = field(default_factory=dict)
    hourly: dict[str, int] = field(default_factory=dict)
    spent: int = 0
    per_policy: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class _Sweep:
    """The mutable bookkeeping of one ``decide`` call; never escapes it."""

    def __init__(
        self,
        snapshots: Mapping[str, AppSnapshot],
        ledger: LedgerView,
        config: GuardConfig,
        now: datetime,
        brake: BrakeState,
        horizon: timedelta,
        censuses: dict[str, _Census],
    ) -> None:
        self.censuses = censuses
        self.snapshots = snapshots
        self.ledger = ledger
        self.config = config
        self.now = now
        self.brake = brake
        self.health: HealthValues = config.health
        self.apps: dict[str, _App] = {}

        # The ledger, through its index: only the apps and policies this call touches.
        self.index = ledger.index
        self.horizon = horizon
        self.fleet_in_flight = self.index.fleet_in_flight(now)
        self.suspended_memo: dict[str, bool] = {}
        self.suspend: set[str] = set()

        # The fleet token bucket, refilled up to now.
        cfg = config.bucket
        b = ledger.bucket
        if b.updated_at is None:
            self.tokens = float(cfg.burst)
        else:
            hours = max((now - b.updated_at).total_seconds(), 0.0) / 3600
            self.tokens = min(float(cfg.burst), b.tokens + cfg.rate_per_hour * hours)
        self.tokens_spent = 0
        self.approved_fleet = 0

        active = [p for p in ledger.pauses if p.active(now)]
        self.global_pause = next((p for p in active if p.app_id is None), None)
        self.app_pauses = {p.app_id: p for p in active if p.app_id is not None}

    def app(self, app_id: str) -> _App:
        st = self.apps.get(app_id)
        if st is None:
            st = self._build(app_id)
            self.apps[app_id] = st
        return st

    def _build(self, app_id: str) -> _App:
        snap = self.snapshots.get(app_id)
        meta = snap.meta if snap is not None else None
        switch: tuple[Reason, str] | None = None
        if self.global_pause is not None:
            p = self.global_pause
            switch = (Reason.PAUSED, f"paused by {p.who}: {p.why}")
        elif app_id in self.app_pauses:
            p = self.app_pauses[app_id]
            switch = (Reason.PAUSED, f"app paused by {p.who}: {p.why}")
        else:
            window = self.config.silenced_by(app_id, meta, self.now)
            if window is not None:
                switch = (Reason.SILENCED, f"maintenance window {window}")
            elif any(s.silences(app_id, meta, self.now) for s in self.ledger.silences):
                switch = (Reason.SILENCED, "silenced")

        # In-flight records still open, and recent attempts, of this app.
        busy: set[str] = set()
        in_flight = 0
        for rec in self.index.in_flight_by_app.get(app_id, ()):
            if rec.open_at(self.now):
                busy.add(rec.instance_id)
                in_flight += rec.disruptive
        since = self.now - self.horizon
        last_touch: dict[str, datetime] = {}
        hourly: dict[str, int] = defaultdict(int)
        for a in self.index.attempts_by_app.get(app_id, ()):
            if a.at <= since or a.at > self.now:
                continue
            if a.instance_id not in last_touch or a.at > last_touch[a.instance_id]:
                last_touch[a.instance_id] = a.at
            if self.now - a.at < HOUR:
                hourly[a.policy] += 1

        if snap is None or not snap.complete:
            return _App(
                app_id=app_id,
                snapshot=snap,
                budget=Budget(R=0, required=0, known=False, why="no complete snapshot"),
                available=frozenset(),
                unhealthy=0,
                rollout=False,
                switch=switch,
                busy=busy,
                in_flight=in_flight,
            )

        census = self.censuses.get(app_id)
        if census is None:
            census = self.censuses[app_id] = _census(snap, self.health)
        return _App(
            app_id=app_id,
            snapshot=snap,
            budget=compute_budget(snap),
            available=census.serving - busy if busy else census.serving,
            unhealthy=census.unhealthy,
            rollout=snap.rollout_in_progress(),
            switch=switch,
            busy=busy,
            in_flight=in_flight,
            last_touch=last_touch,
            hourly=hourly,
        )

    def arithmetic(self, st: _App, cost: int) -> Arithmetic:
        R = st.budget.R
        return Arithmetic(
            R=R,
            required=st.budget.required,
            available=len(st.available),
            cost=cost,
            spent_before=st.spent,
            in_flight=st.in_flight,
            unhealthy=st.unhealthy,
            unhealthy_share=(st.unhealthy / R) if R > 0 else None,
            budget_known=st.budget.known,
        )

    def judge(self, p: Proposal) -> tuple[Reason | None, Arithmetic | None, str | None]:
        """The first reason that refuses ``p``, in precedence order, or None to approve."""
        st = self.app(p.app_id)
        snap = st.snapshot
        rules = p.policy
        disruptive = p.disruptive
        inst = snap.instances.get(p.instance_id) if snap is not None else None
        # An instance whose state the top-five lists leave unresolved may be serving:
        # acting on it is charged as if it were (it is never counted available).
        unresolved = inst is not None and inst.state is None
        cost = 1 if disruptive and (p.instance_id in st.available or unresolved) else 0
        arith = self.arithmetic(st, cost) if snap is not None and snap.complete else None

        # Fleet and app switches.
        if not self.ledger.leader:
            return Reason.NOT_LEADER, arith, None
        if st.switch is not None:
            return st.switch[0], arith, st.switch[1]
        if snap is None or not snap.complete:
            gone = ", ".join(snap.missing) if snap is not None else "no snapshot"
            return Reason.STALE_SNAPSHOT, None, gone
        if inst is None:
            return Reason.STALE_SNAPSHOT, arith, f"instance {p.instance_id} not in snapshot"
        if disruptive and self.brake.engaged:
            return Reason.FLEET_BRAKE, arith, self.brake.why

        # App state.
        if disruptive and not st.budget.known:
            return Reason.BUDGET_UNKNOWN, arith, st.budget.why
        if disruptive and self.config.rollout_check and st.rollout:
            return Reason.ROLLOUT, arith, None
        if disruptive and self._short_circuit(st, rules.max_unhealthy):
            return Reason.SHORT_CIRCUIT, arith, None

        # The instance.
        if inst.frozen and p.action is not Action.UNFREEZE:
            return Reason.FROZEN, arith, None
        if inst.disabled and p.action is not Action.ENABLE:
            return Reason.DISABLED, arith, None
        if inst.under_repair:
            return Reason.UNDER_REPAIR, arith, None
        if inst.migrating:
            return Reason.MIGRATING, arith, None
        if p.instance_id in st.busy:
            return Reason.IN_FLIGHT, arith, None

        # Masks: a missing flag counts as set.
        meta = snap.meta
        effect = self.config.effect(p.action)
        if effect == "shrink" and (meta is None or meta.shrink_mask is not False):
            return Reason.SHRINK_MASK, arith, None
        if effect == "extend" and (meta is None or meta.extend_mask is not False):
            return Reason.EXTEND_MASK, arith, None

        # Limits.
        if self._suspended(rules.name):
            return Reason.POLICY_SUSPENDED, arith, None
        cooldown = rules.instance_cooldown
        if cooldown is None:
            cooldown = self.config.instance_cooldown
        last = st.last_touch.get(p.instance_id)
        if last is not None and self.now - last < cooldown:
            return Reason.COOLDOWN, arith, f"last action at {last.isoformat()}"
        this_cycle = st.per_policy[rules.name]
        if rules.per_cycle is not None and this_cycle >= rules.per_cycle:
            return Reason.RATE_LIMIT, arith, f"per_cycle {rules.per_cycle}"
        hourly = st.hourly.get(rules.name, 0) + this_cycle
        if rules.per_app_per_hour is not None and hourly >= rules.per_app_per_hour:
            return Reason.RATE_LIMIT, arith, f"per_app_per_hour {rules.per_app_per_hour}"
        if disruptive and self.tokens - self.tokens_spent < 1:
            return Reason.RATE_LIMIT, arith, "fleet token bucket empty"
        if disruptive:
            limit = rules.max_in_flight
            if limit is None:
                limit = self.config.max_in_flight
            if st.in_flight >= limit:
                return Reason.MAX_IN_FLIGHT, arith, f"app limit {limit}"
            cap = self.config.fleet_max_in_flight
            if cap is not None and self.fleet_in_flight + self.approved_fleet >= cap:
                return Reason.MAX_IN_FLIGHT, arith, f"fleet limit {cap}"

        # The budget, last.
        if cost and len(st.available) - st.spent - cost < st.budget.required:
            return Reason.BUDGET, arith, None

        return None, arith, None

    def _suspended(self, policy: str) -> bool:
        """Suspended by a person, or mostly not_healed lately (then reported as new)."""
        if policy in self.ledger.suspended_policies:
            return True
        hit = self.suspended_memo.get(policy)
        if hit is None:
            cfg = self.config.suspension
            since = self.now - cfg.window
            resumed = self.ledger.resumed_at.get(policy)
            if resumed is not None and resumed > since:
                since = resumed
            total, bad = self.index.verified(policy, since, self.now)
            share = _share(cfg.not_healed_share)
            hit = total >= cfg.min_actions and _over_share(bad, total, share)
            self.suspended_memo[policy] = hit
            if hit:
                self.suspend.add(policy)
        return hit

    def _short_circuit(self, st: _App, policy_share: float | None) -> bool:
        share = self.config.max_unhealthy if policy_share is None else policy_share
        return st.unhealthy >= 2 and _over_share(st.unhealthy, st.budget.R, _share(share))

    def spend(self, p: Proposal, arith: Arithmetic | None) -> None:
        """Record an approval: the only place the sweep's state changes."""
        st = self.app(p.app_id)
        st.busy.add(p.instance_id)
        st.per_policy[p.policy.name] += 1
        if p.disruptive:
            st.spent += arith.cost if arith is not None else 0
            st.in_flight += 1
            self.approved_fleet += 1
            self.tokens_spent += 1

    def short_circuited(self) -> frozenset[str]:
        """Every app of the call, proposals or not, that the configured share trips."""
        share = _share(self.config.max_unhealthy)
        out = set()
        for app_id, snap in self.snapshots.items():
            if not snap.complete:
                continue
            census = self.censuses.get(app_id)
            if census is None:
                census = self.censuses[app_id] = _census(snap, self.health)
            R = compute_budget(snap).R
            if census.unhealthy >= 2 and _over_share(census.unhealthy, R, share):
                out.add(app_id)
        return frozenset(out)


def _order(p: Proposal) -> tuple[tuple[int, str, str, str], str]:
    return p.sort_key(), p.app_id


def decide(
    snapshots: Mapping[str, AppSnapshot],
    ledger: LedgerView,
    proposals: Sequence[Proposal],
    config: GuardConfig,
    now: datetime,
    *,
    whole_sweep: bool = False,
) -> GuardResult:
    """Judge every proposal; see the module docstring for how.

    ``whole_sweep``: ``snapshots`` is every enrolled app of one sweep, so the
    fleet brake is judged here (``sweep_health``) and applied at once.
    Otherwise the brake state in ``ledger`` is applied as it is.
    """
    brake = ledger.fleet_brake
    censuses: dict[str, _Census] = {}
    if whole_sweep:
        health = config.health
        censuses = {a: _census(s, health) for a, s in snapshots.items() if s.complete}
        brake = _judge_fleet(
            snapshots, censuses, ledger.api_error_rate, brake, config, ledger.api_calls
        )

    cooldowns = [p.policy.instance_cooldown for p in proposals if p.policy.instance_cooldown]
    horizon = max([HOUR, config.instance_cooldown, *cooldowns])
    sweep = _Sweep(snapshots, ledger, config, now, brake, horizon, censuses)

    # Real proposals in the one fixed order; dry runs after them, spending nothing.
    decisions: dict[int, Decision] = {}
    order = sorted(range(len(proposals)), key=lambda i: _order(proposals[i]))
    for i in order:
        p = proposals[i]
        if p.policy.dry_run:
            continue
        reason, arith, detail = sweep.judge(p)
        if reason is None:
            sweep.spend(p, arith)
            decisions[i] = Decision(p, Verdict.APPROVED, None, arith, detail)
        else:
            decisions[i] = Decision(p, Verdict.REFUSED, reason, arith, detail)
    for i in order:
        p = proposals[i]
        if p.policy.dry_run:
            reason, arith, detail = sweep.judge(p)
            decisions[i] = Decision(p, Verdict.DRY_RUN, reason, arith, detail)

    bucket = BucketState(tokens=sweep.tokens - sweep.tokens_spent, updated_at=now)
    stale = frozenset(a for a, s in snapshots.items() if not s.complete) | frozenset(
        a.app_id for a in sweep.apps.values() if a.snapshot is None
    )
    return GuardResult(
        decisions=tuple(decisions[i] for i in range(len(proposals))),
        brake=brake,
        bucket=bucket,
        tokens_spent=sweep.tokens_spent,
        short_circuited=sweep.short_circuited(),
        stale=stale,
        suspend=frozenset(sweep.suspend),
    )
