"""The engine: observe → plan → guard → execute → verify, once per sweep.

A sweep looks at every enrolled app, decides for all of them at once, acts,
and records. The steps, in order:

1. **Observe**: each app's snapshot, the requests spread evenly over the
   first part of the poll interval (``observe_spread``) so that CloudPilot
   never sees a burst, at most ``concurrency`` apps at a time.
2. **Verify**: every open action is judged against its instance as now seen
   (``healed``, ``not_healed``, or past its deadline ``expired``), before
   anything new is decided, so that a closed record frees its instance.
3. **Plan**: policies are evaluated per app into proposals; apps with
   proposals get the rest of their snapshot (disabled list, budget).
4. **Guard**: one call over the whole sweep, so the fleet brake sees every
   app before any of them is acted on.
5. **Execute**: each approved action is written to the ledger as ``issued``
   *before* CloudPilot is called, then the per-instance answer is recorded.

Deciding once per sweep, after every app was looked at, is what lets the
fleet brake stop a correlated failure before the first action; the price is
that an app is acted on up to ``observe_spread × poll_interval`` after it was
observed. ``plan`` runs steps 1, 3 and 4 without recording or acting.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.errors import ActionOutcomeUnknown, CloudPilotError
from healer.cloudpilot.models import DISRUPTIVE_ACTIONS, Action
from healer.engine.observe import SnapshotSource
from healer.guard import (
    Attempt,
    BrakeState,
    BucketState,
    Decision,
    GuardConfig,
    GuardResult,
    InFlight,
    LedgerView,
    Pause,
    Silence,
    Verdict,
    decide,
)
from healer.guard import Outcome as GuardOutcome
from healer.guard.config import read_select
from healer.guard.outcomes import Issued, flapped, unhealed_counter, verify
from healer.model import PolicyRules, Proposal
from healer.observe.metrics import HealerMetrics
from healer.policy.evaluate import ConditionMemory, evaluate
from healer.policy.model import Policy
from healer.snapshot import AppSnapshot
from healer.store import ActionRecord, ActionRow, DecisionRow, Outcome, Store

log = structlog.get_logger("healer.engine")

#: How the store's action outcomes read to the guard.
GUARD_OUTCOME: dict[Outcome, GuardOutcome] = {
    Outcome.ISSUED: GuardOutcome.PENDING,
    Outcome.IN_FLIGHT: GuardOutcome.PENDING,
    Outcome.UNKNOWN: GuardOutcome.UNKNOWN,
    Outcome.FAILED: GuardOutcome.FAILED,
    Outcome.HEALED: GuardOutcome.HEALED,
    Outcome.NOT_HEALED: GuardOutcome.NOT_HEALED,
    Outcome.EXPIRED: GuardOutcome.UNKNOWN,
}

#: The least of how far back the ledger is read for rate limits, escalation, cooldowns and
#: suspension; longer when a policy's window or cooldown, or the suspension window, is.
HISTORY = timedelta(hours=6)

BRAKE_KEY = "fleet_brake"
BUCKET_KEY = "fleet_bucket"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AppStatus:
    """What the last sweep saw and did for one app, for ``/v1/status``."""

    app_id: str
    observed_at: datetime
    complete: bool
    missing: list[str]
    instances: dict[str, int]
    unhealthy: int
    pending: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["observed_at"] = self.observed_at.isoformat()
        return out


@dataclass
class SweepResult:
    """One sweep's outcome: what was seen, decided and done."""

    started_at: datetime
    apps: int
    complete: int
    snapshots: dict[str, AppSnapshot]
    guard: GuardResult | None
    issued: int = 0
    seconds: float = 0.0

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self.guard.decisions if self.guard else ()


class _CallCounter:
    """Counts CloudPilot calls and failures during a sweep, for the API error-rate brake."""

    def __init__(self, metrics: HealerMetrics | None) -> None:
        self.metrics = metrics
        self.calls = 0
        self.errors = 0

    def __call__(self, call: str, outcome: str, seconds: float) -> None:
        self.calls += 1
        if outcome != "ok":
            self.errors += 1
        if self.metrics is not None:
            self.metrics.observe_request(call, outcome, seconds)

    def take(self) -> tuple[int, int]:
        calls, errors = self.calls, self.errors
        self.calls = self.errors = 0
        return calls, errors


def request_counter(metrics: HealerMetrics | None) -> _CallCounter:
    """The ``on_request`` hook to build the client with; give the same object to the Engine."""
    return _CallCounter(metrics)


class Engine:
    """Runs sweeps over the enrolled apps; see the module docstring."""

    def __init__(
        self,
        *,
        client: CloudPilotClient,
        store: Store,
        guard: GuardConfig,
        metrics: HealerMetrics,
        calls: _CallCounter,
        poll_interval: timedelta,
        observe_spread: float = 0.5,
        concurrency: int = 32,
        replica_id: str = "healer",
        meta_ttl: timedelta = timedelta(minutes=5),
        budget_ttl: timedelta = timedelta(seconds=60),
        address_ttl: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.client = client
        self.store = store
        self.guard = guard
        self.metrics = metrics
        self.calls = calls
        self.poll_interval = poll_interval
        self.observe_spread = observe_spread
        self.concurrency = concurrency
        self.replica_id = replica_id
        self.clock = clock
        self.source = SnapshotSource(
            client, meta_ttl=meta_ttl, budget_ttl=budget_ttl, address_ttl=address_ttl
        )
        self.policies: list[Policy] = []
        # TODO: leases with fencing when several replicas share PostgreSQL; one replica leads now.
        self.leader = True
        self.memory = ConditionMemory()
        self.status: dict[str, AppStatus] = {}
        self.last_sweep: SweepResult | None = None
        #: Sweeps that ended with at least one complete snapshot (or nothing enrolled), and
        #: those in which every app's snapshot was complete.
        self.sweeps_answered = 0
        self.complete_sweeps = 0
        # Since when each open action's goal has held (verification's healthy_for).
        self._healthy_since: dict[int, datetime] = {}
        # The memory last written per app: only apps whose memory changed are written again.
        self._saved_memory: dict[str, str] = {}

    async def start(self) -> None:
        """Load what the store remembers: condition memory survives restarts."""
        loaded = await self.store.load_memory()
        apps = {}
        for app_id, data in loaded.items():
            text = data.get("memory")
            if isinstance(text, str):
                try:
                    held = ConditionMemory.from_json(text).apps.get(app_id)
                except (ValueError, KeyError, TypeError):
                    # A memory that cannot be read only delays `for`; never a reason to stop.
                    log.warning("condition_memory_unreadable", app_id=app_id)
                    continue
                if held:
                    apps[app_id] = held
                self._saved_memory[app_id] = text
        self.memory = ConditionMemory(apps)

    # -- the sweep -----------------------------------------------------------------------

    async def sweep(self, app_ids: Sequence[str], *, execute: bool = True) -> SweepResult:
        """One sweep over ``app_ids``: observe, verify, plan, guard and (if ``execute``) act."""
        started = time.monotonic()
        started_at = self.clock()
        apps = list(dict.fromkeys(app_ids))
        want_events = any(p.enabled and p.when.event is not None for p in self.policies)

        snapshots = await self._observe_all(apps, started_at, want_events)
        now = self.clock()
        calls, errors = self.calls.take()

        if execute:
            await self._verify_open(snapshots, now)

        ledger = await self._ledger_view(now, calls, errors)
        attempts = unhealed_counter(ledger.attempts, now)
        proposals: list[Proposal] = []
        held = dict(self.memory.apps)
        for app_id in apps:
            snap = snapshots[app_id]
            if not snap.complete:
                # Nothing is concluded from partial data, not even that a condition stopped.
                continue
            mine = self.memory.for_app(app_id)
            result = evaluate(self.policies, snap, mine, now, attempts=attempts)
            held[app_id] = result.memory.apps.get(app_id, {})
            proposals.extend(result.proposals)
        # Apps no longer enrolled are forgotten; their conditions start afresh if they return.
        enrolled = set(apps)
        new_memory = ConditionMemory({a: h for a, h in held.items() if h and a in enrolled})

        # Apps with something to decide get the rest of their snapshot.
        deciding = sorted({p.app_id for p in proposals})
        completed = await asyncio.gather(
            *(self.source.complete_for_decision(snapshots[a]) for a in deciding)
        )
        snapshots.update({s.app_id: s for s in completed})

        result_guard = decide(snapshots, ledger, proposals, self.guard, now, whole_sweep=True)
        sweep = SweepResult(
            started_at=started_at,
            apps=len(apps),
            complete=sum(1 for s in snapshots.values() if s.complete),
            snapshots=snapshots,
            guard=result_guard,
        )
        self._observe_fleet(snapshots, result_guard)
        if not execute:
            return sweep

        self.memory = new_memory
        await self._record(snapshots, result_guard, now)
        sweep.issued = await self._execute(result_guard.approved, snapshots, now)
        await self._persist(apps, result_guard, now)

        sweep.seconds = time.monotonic() - started
        self._update_status(snapshots, result_guard, now)
        self.last_sweep = sweep
        if sweep.complete or not sweep.apps:
            self.sweeps_answered += 1
        if sweep.apps and sweep.complete == sweep.apps:
            self.complete_sweeps += 1
        self.metrics.observe_sweep(sweep.seconds)
        log.info(
            "sweep_done",
            apps=sweep.apps,
            complete=sweep.complete,
            proposals=len(proposals),
            approved=len(result_guard.approved),
            refused=len(result_guard.refused),
            issued=sweep.issued,
            brake=result_guard.brake.engaged,
            seconds=round(sweep.seconds, 3),
        )
        return sweep

    async def _observe_all(
        self, apps: list[str], now: datetime, want_events: bool
    ) -> dict[str, AppSnapshot]:
        """Every app's snapshot, the starts spread evenly over the observe window."""
        window = self.poll_interval.total_seconds() * self.observe_spread
        step = window / len(apps) if apps else 0.0
        gate = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(i: int, app_id: str) -> AppSnapshot:
            delay = t0 + i * step - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with gate:
                try:
                    snap = await self.source.observe(app_id, self.clock(), want_events=want_events)
                except Exception as exc:
                    # A bug or an odd answer in one app must not end the sweep for the others.
                    log.exception("observe_failed", app_id=app_id, error=type(exc).__name__)
                    self.metrics.observe_cycle("error")
                    return AppSnapshot(app_id=app_id, taken_at=now, missing=("observe",))
            self.metrics.observe_cycle("ok" if snap.complete else "skipped")
            if not snap.complete:
                log.warning("stale_snapshot", app_id=app_id, missing=list(snap.missing))
            return snap

        snaps = await asyncio.gather(*(one(i, a) for i, a in enumerate(apps)))
        return {s.app_id: s for s in snaps}

    # -- the ledger ----------------------------------------------------------------------

    def history_horizon(self) -> timedelta:
        """How far back attempts are read: far enough for every window that counts them.

        A fixed horizon would quietly shorten a 12 h cooldown or a 1 d escalation window
        to itself, and the guard would act sooner than the policy says.
        """
        windows = [
            HISTORY,
            self.guard.instance_cooldown,
            self.guard.suspension.window,
            self.guard.probation,
        ]
        for p in self.policies:
            windows.append(p.limits.instance_cooldown or timedelta(0))
            if p.escalate is not None:
                windows.append(p.escalate.within)
        return max(windows)

    async def _ledger_view(self, now: datetime, calls: int, errors: int) -> LedgerView:
        """The ledger as the guard reads it, from the store."""
        open_actions = await self.store.open_actions()
        history = await self.store.attempts_since(now - self.history_horizon())
        pauses = await self.store.active_pauses(now)
        silences = await self.store.active_silences(now)
        suspended = await self.store.suspended_policies()
        resumed = await self.store.policy_resumptions()
        brake = await self.store.get_state(BRAKE_KEY) or {}
        bucket = await self.store.get_state(BUCKET_KEY) or {}

        attempts = tuple(
            Attempt(
                r.app_id, r.instance_id, r.policy, r.action, r.issued_at, GUARD_OUTCOME[r.outcome]
            )
            for r in history
        )
        return LedgerView(
            in_flight=tuple(
                InFlight(
                    app_id=r.app_id,
                    instance_id=r.instance_id,
                    action=r.action,
                    policy=r.policy,
                    issued_at=r.issued_at,
                    deadline=r.deadline,
                    disruptive=Action(r.action) in DISRUPTIVE_ACTIONS,
                )
                for r in open_actions
            ),
            attempts=attempts,
            pauses=tuple(Pause(p.who, p.why, p.until, p.app_id) for p in pauses),
            silences=tuple(_silence(s) for s in silences),
            suspended_policies=frozenset(suspended),
            resumed_at=resumed,
            bucket=BucketState(
                tokens=float(bucket.get("tokens", 0.0)),
                updated_at=_parse_time(bucket.get("updated_at")),
            ),
            fleet_brake=BrakeState(
                engaged=bool(brake.get("engaged", False)),
                clear_sweeps=int(brake.get("clear_sweeps", 0)),
                why=brake.get("why"),
            ),
            api_error_rate=(errors / calls) if calls else None,
            api_calls=calls,
            leader=self.leader,
        )

    async def _verify_open(self, snapshots: Mapping[str, AppSnapshot], now: datetime) -> None:
        """Close what can be closed: healed, not healed, or past its deadline unseen."""
        rules = {p.name: p.rules() for p in self.policies}
        health = self.guard.health
        updates: list[tuple[int, Outcome, datetime, str | None]] = []
        for rec in await self.store.open_actions():
            snap = snapshots.get(rec.app_id)
            seen = snap is not None and snap.complete
            inst = snap.instances.get(rec.instance_id) if seen and snap else None
            rule = rules.get(rec.policy) or PolicyRules(
                name=rec.policy, verify_timeout=rec.deadline - rec.issued_at
            )
            issued = Issued(
                rec.app_id,
                rec.instance_id,
                Action(rec.action),
                rec.issued_at,
                self._healthy_since.get(rec.id),
            )
            v = verify(issued, inst, now, rule, seen=seen, health=health)
            if not v.closed:
                if v.healthy_since is not None:
                    self._healthy_since[rec.id] = v.healthy_since
                else:
                    self._healthy_since.pop(rec.id, None)
                continue
            self._healthy_since.pop(rec.id, None)
            outcome = {
                GuardOutcome.HEALED: Outcome.HEALED,
                GuardOutcome.NOT_HEALED: Outcome.NOT_HEALED,
            }.get(v.outcome, Outcome.EXPIRED)
            updates.append((rec.id, outcome, now, None))
            self._observe_verified(rec, outcome, now)

        # A heal that fails again inside its probation did not hold: it becomes not_healed,
        # an unhealed attempt that feeds escalation (flap damping).
        since = now - self.guard.probation - self.history_horizon()
        for rec in await self.store.actions(since=since, outcome=Outcome.HEALED.value):
            snap = snapshots.get(rec.app_id)
            if snap is None or not snap.complete or rec.outcome_at is None:
                continue
            inst = snap.instances.get(rec.instance_id)
            if flapped(Action(rec.action), rec.outcome_at, inst, now, self.guard.probation, health):
                log.warning(
                    "heal_flapped",
                    app_id=rec.app_id,
                    instance_id=rec.instance_id,
                    policy=rec.policy,
                    action=rec.action,
                )
                updates.append((rec.id, Outcome.NOT_HEALED, now, "failed again inside probation"))
        if updates:
            await self.store.set_outcomes(updates)

    def _observe_verified(self, rec: ActionRecord, outcome: Outcome, now: datetime) -> None:
        heal_seconds = None
        if outcome is Outcome.HEALED and rec.fault_seen_at is not None:
            heal_seconds = max((now - rec.fault_seen_at).total_seconds(), 0.0)
        if outcome in (Outcome.HEALED, Outcome.NOT_HEALED):
            self.metrics.observe_verification(rec.policy, rec.action, outcome.value, heal_seconds)
        log.info(
            "action_verified",
            app_id=rec.app_id,
            instance_id=rec.instance_id,
            policy=rec.policy,
            action=rec.action,
            outcome=outcome.value,
            heal_seconds=heal_seconds,
        )

    async def _record(
        self, snapshots: Mapping[str, AppSnapshot], result: GuardResult, now: datetime
    ) -> None:
        """Every decision into the ledger and the metrics."""
        rows = []
        for d in result.decisions:
            p = d.proposal
            reason = d.reason.value if d.reason else None
            self.metrics.observe_decision(p.policy.name, p.action.value, d.outcome.value, reason)
            rows.append(
                DecisionRow(
                    at=now,
                    app_id=p.app_id,
                    instance_id=p.instance_id,
                    policy=p.policy.name,
                    action=p.action.value,
                    decision=d.outcome.value,
                    reason=reason,
                    arithmetic=_arith(d),
                    matched=[
                        {"condition": m.condition, "held_s": m.held_for.total_seconds()}
                        for m in p.matched
                    ],
                )
            )
            if d.outcome is Verdict.REFUSED:
                log.info(
                    "action_refused",
                    app_id=p.app_id,
                    instance_id=p.instance_id,
                    policy=p.policy.name,
                    action=p.action.value,
                    reason=reason,
                    detail=d.detail,
                )
            elif d.outcome is Verdict.DRY_RUN:
                log.info(
                    "action_dry_run",
                    app_id=p.app_id,
                    instance_id=p.instance_id,
                    policy=p.policy.name,
                    action=p.action.value,
                    would_refuse=reason,
                )
        if rows:
            await self.store.record_decisions(rows)

    # -- acting --------------------------------------------------------------------------

    async def _execute(
        self, approved: Sequence[Decision], snapshots: Mapping[str, AppSnapshot], now: datetime
    ) -> int:
        """Issue every approved action: ledger first, then CloudPilot, then the answer."""
        if not approved:
            return 0
        # One call per app, policy and action; the ledger holds one row per instance.
        groups: dict[tuple[str, str, Action], list[Decision]] = {}
        for d in approved:
            p = d.proposal
            groups.setdefault((p.app_id, p.policy.name, p.action), []).append(d)

        gate = asyncio.Semaphore(self.concurrency)

        async def one(key: tuple[str, str, Action], batch: list[Decision]) -> int:
            async with gate:
                return await self._issue(key, batch, now)

        done = await asyncio.gather(*(one(k, b) for k, b in groups.items()))
        return sum(done)

    async def _issue(
        self, key: tuple[str, str, Action], batch: list[Decision], now: datetime
    ) -> int:
        app_id, policy, action = key
        rules = batch[0].proposal.policy
        # The fault was first seen when its longest-held condition started to hold.
        seen = {
            d.proposal.instance_id: now
            - max((m.held_for for m in d.proposal.matched), default=timedelta(0))
            for d in batch
        }
        rows = [
            ActionRow(
                app_id=app_id,
                instance_id=d.proposal.instance_id,
                policy=policy,
                action=action.value,
                params=dict(d.proposal.params),
                issued_at=now,
                deadline=now + rules.verify_timeout,
                fault_seen_at=seen[d.proposal.instance_id],
                replica=self.replica_id,
                arithmetic=_arith(d),
            )
            for d in batch
        ]
        # Written before the call: after a crash the action counts as in flight, never resent.
        ids = await self.store.issue_actions(rows)
        by_instance = dict(zip((r.instance_id for r in rows), ids, strict=True))
        instance_ids = list(by_instance)
        log.info(
            "action_issued",
            app_id=app_id,
            policy=policy,
            action=action.value,
            instance_ids=instance_ids,
        )
        self.source.forget(app_id)

        outcomes: dict[str, tuple[Outcome, str | None]] = {}
        try:
            answer = await self.client.act(action, app_id, instance_ids, replica=self.replica_id)
        except ActionOutcomeUnknown as exc:
            # A definite 5xx answer closes the records as failed (an attempt, INCIDENTS C8);
            # a lost answer leaves them in flight until their deadline.
            failed = exc.outcome.startswith("http_5")
            verdict = Outcome.FAILED if failed else Outcome.UNKNOWN
            outcomes = {i: (verdict, str(exc)) for i in instance_ids}
        except CloudPilotError as exc:
            # Not sent or refused: nothing happened to the instances; one attempt each.
            outcomes = {i: (Outcome.FAILED, str(exc)) for i in instance_ids}
        else:
            outcomes.update({i: (Outcome.IN_FLIGHT, None) for i in answer.success_instances})
            outcomes.update(
                {i: (Outcome.FAILED, "failed_instances") for i in answer.failed_instances}
            )
            outcomes.update(
                {i: (Outcome.UNKNOWN, "in neither list") for i in answer.unknown_instances}
            )

        updates = []
        counts: Counter[str] = Counter()
        for iid in instance_ids:
            outcome, detail = outcomes.get(iid, (Outcome.UNKNOWN, "not in the answer"))
            updates.append((by_instance[iid], outcome, self.clock(), detail))
            counts[_METRIC_OUTCOME[outcome]] += 1
            if outcome is not Outcome.IN_FLIGHT:
                log.warning(
                    "action_not_accepted",
                    app_id=app_id,
                    instance_id=iid,
                    policy=policy,
                    action=action.value,
                    outcome=outcome.value,
                    detail=detail,
                )
        await self.store.set_outcomes(updates)
        for outcome_label, n in counts.items():
            self.metrics.observe_action(policy, action.value, outcome_label, n)
        return len(instance_ids)

    # -- after the sweep -----------------------------------------------------------------

    async def _persist(self, apps: Sequence[str], result: GuardResult, now: datetime) -> None:
        """Save what the next sweep (or the next process) needs."""
        await self.store.set_state(
            BRAKE_KEY,
            {
                "engaged": result.brake.engaged,
                "clear_sweeps": result.brake.clear_sweeps,
                "why": result.brake.why,
            },
        )
        await self.store.set_state(
            BUCKET_KEY,
            {
                "tokens": result.bucket.tokens,
                "updated_at": result.bucket.updated_at.isoformat()
                if result.bucket.updated_at
                else None,
            },
        )
        for name in sorted(result.suspend):
            why = "most recent actions ended not_healed"
            if await self.store.suspend_policy(name, why, now):
                log.error("policy_suspended", policy=name, why=why)
        changed = {}
        for app_id in apps:
            text = self.memory.for_app(app_id).to_json()
            if self._saved_memory.get(app_id) != text:
                changed[app_id] = text
        if changed:
            await self.store.save_memories({a: {"memory": t} for a, t in changed.items()})
            self._saved_memory.update(changed)

    def _observe_fleet(self, snapshots: Mapping[str, AppSnapshot], result: GuardResult) -> None:
        health = self.guard.health
        states: Counter[str] = Counter()
        unhealthy_apps = 0
        for s in snapshots.values():
            for state, n in s.state_counts.items():
                states[state] += n
            if s.unhealthy_count(health):
                unhealthy_apps += 1
        self.metrics.set_instances(states)
        self.metrics.set_fleet(
            enrolled=len(snapshots),
            unhealthy=unhealthy_apps,
            short_circuited=len(result.short_circuited),
            fleet_brake=result.brake.engaged,
        )
        if result.brake.engaged:
            # TODO: an admin release of the brake, with who and why, like a pause.
            log.error("fleet_brake_engaged", why=result.brake.why)

    def _update_status(
        self, snapshots: Mapping[str, AppSnapshot], result: GuardResult, now: datetime
    ) -> None:
        health = self.guard.health
        by_app: dict[str, list[Decision]] = {}
        for d in result.decisions:
            by_app.setdefault(d.proposal.app_id, []).append(d)
        pending: dict[str, list[dict[str, Any]]] = {}
        for (policy, app_id, instance_id, condition), since in self.memory.entries():
            pending.setdefault(app_id, []).append(
                {
                    "policy": policy,
                    "instance_id": instance_id,
                    "condition": condition,
                    "held_s": round((now - since).total_seconds(), 1),
                }
            )
        status = {}
        for app_id, s in snapshots.items():
            decisions = by_app.get(app_id, [])
            first_arith = next((d.arithmetic for d in decisions if d.arithmetic), None)
            status[app_id] = AppStatus(
                app_id=app_id,
                observed_at=s.taken_at,
                complete=s.complete,
                missing=list(s.missing),
                instances=dict(s.state_counts),
                unhealthy=s.unhealthy_count(health),
                pending=pending.get(app_id, []),
                decisions=[_decision_json(d) for d in decisions],
                budget=asdict(first_arith) if first_arith else None,
            )
        self.status = status


_METRIC_OUTCOME: dict[Outcome, str] = {
    Outcome.IN_FLIGHT: "success",
    Outcome.FAILED: "failed",
    Outcome.UNKNOWN: "unknown",
}


def _arith(d: Decision) -> dict[str, Any]:
    return asdict(d.arithmetic) if d.arithmetic else {}


def _decision_json(d: Decision) -> dict[str, Any]:
    p = d.proposal
    return {
        "instance_id": p.instance_id,
        "policy": p.policy.name,
        "action": p.action.value,
        "decision": d.outcome.value,
        "reason": d.reason.value if d.reason else None,
        "detail": d.detail,
        "arithmetic": _arith(d),
        "matched": [
            {"condition": m.condition, "held_s": m.held_for.total_seconds()} for m in p.matched
        ],
    }


def _silence(rec: Any) -> Silence:
    """A stored silence for the guard; its selector is a policy selector, matched as one.

    A stored selector that no longer reads as one (written by hand, or by another
    version) silences every app until the silence ends: it was set to do less, and
    healer cannot tell which apps it meant.
    """
    try:
        select = read_select(rec.selector)
    except ValueError as exc:
        log.error("silence_unreadable", silence_id=rec.id, error=" ".join(str(exc).split())[:300])
        select = read_select({})
    return Silence(
        select=select,
        start=rec.start,
        end=rec.end,
        who=rec.who,
        why=rec.why,
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
