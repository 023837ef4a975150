"""Policy test cases: read a case, run it through the production path, compare.

This is the engine of ``healer test`` (DESIGN section 5). A case describes
apps over time; each step is one sweep. For every step the runner writes the
CloudPilot payloads the case implies, parses them with the production models
(``payloads.py``), evaluates the policies with the production evaluator,
judges the proposals with the production guard, answers the approved actions
itself, and keeps an in-memory ledger across steps: what was issued, what
came of it (``outcomes.verify`` and ``outcomes.flapped``), cooldowns, rate
limits, the fleet brake and the token bucket.

A case file holds one case or several (``---`` between them)::

    name: 80 % of 7 keeps 6 available
    policies: [restart-unknown]        # by name from --policies DIR, and/or
    inline: [{name: p, when: {status: [UNKNOWN]}, action: restart}]
    config: {max_in_flight: 3}         # guard settings for this case
    leader: true
    ledger:                            # actions issued before the case starts
      - {app: a, instance: a.3, action: migrate, policy: p, at: -40m}
    steps:
      - at: 0s
        apps: {a: {...}}               # see payloads.py; an app left out keeps its last state
        fail_calls: [instance_info]    # snapshot calls answered HTTP 500, or action names
        fail: [a.1]                    # instances whose action fails
        unknown: [a.2]                 # instances an action answer does not mention
        expect:
          actions: [{app: a, instance: a.1, action: restart}]
          refused: [{app: a, instance: a.2, action: migrate, reason: budget, available: 6}]
          dry_run: []
          outcomes: [{app: a, instance: a.3, action: migrate, outcome: healed}]
          only: true

Expected decisions match on the keys they give (``app``, ``instance``,
``action``, ``reason`` and any of the arithmetic: ``R``, ``required``,
``available``, ``cost``, ``spent_before``, ``in_flight``, ``unhealthy``).
An app whose snapshot is incomplete is not evaluated at all (nothing is
done on partial data); it shows as one refusal with reason
``stale_snapshot`` and no instance or action. With ``only: true`` no
decision beyond the listed ones may happen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from healer.cloudpilot.models import Action, ActionResult
from healer.guard.config import GuardConfig
from healer.guard.decide import Decision, Verdict, decide
from healer.guard.ledger import (
    Attempt,
    BrakeState,
    BucketState,
    InFlight,
    LedgerView,
    Outcome,
)
from healer.guard.outcomes import Issued, flapped, unhealed_counter, verify
from healer.guard.payloads import CALLS, CaseError, app_payloads, parse_snapshot
from healer.guard.reasons import Reason
from healer.model import PolicyRules, Proposal
from healer.policy.durations import parse_duration
from healer.policy.evaluate import ConditionMemory, evaluate
from healer.policy.loader import load_directory, load_text
from healer.policy.model import Policy
from healer.snapshot import AppSnapshot

#: Where case time starts: step ``at: 0s``.
EPOCH = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)

ARITHMETIC_KEYS = ("R", "required", "available", "cost", "spent_before", "in_flight", "unhealthy")


def _signed_duration(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            return -parse_duration(text[1:])
        return parse_duration(text)
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    return value


Offset = Annotated[timedelta, BeforeValidator(_signed_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExpectedDecision(Strict):
    """One decision a step must make; only the keys given are compared."""

    app: str
    instance: str | None = None
    action: Action | None = None
    reason: Reason | None = None
    R: int | None = None
    required: int | None = None
    available: int | None = None
    cost: int | None = None
    spent_before: int | None = None
    in_flight: int | None = None
    unhealthy: int | None = None

    def show(self) -> str:
        given = self.model_dump(exclude_none=True)
        return _describe(
            given.pop("app"),
            given.pop("instance", None),
            given.pop("action", None),
            given.pop("reason", None),
            given,
        )


class ExpectedOutcome(Strict):
    """What the ledger must say of the latest action on an instance after the step."""

    app: str
    instance: str
    action: Action | None = None
    outcome: Outcome


class Expect(Strict):
    actions: list[ExpectedDecision] = Field(default_factory=list)
    refused: list[ExpectedDecision] = Field(default_factory=list)
    dry_run: list[ExpectedDecision] = Field(default_factory=list)
    outcomes: list[ExpectedOutcome] = Field(default_factory=list)
    only: bool = False


class Step(Strict):
    at: Offset = timedelta(0)
    apps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fail_calls: list[str] = Field(default_factory=list)
    fail: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)
    api_error_rate: float | None = None
    expect: Expect | None = None

    @model_validator(mode="after")
    def _known_calls(self) -> Step:
        names = set(CALLS) | {a.value for a in Action}
        bad = sorted(set(self.fail_calls) - names)
        if bad:
            raise ValueError(f"fail_calls: unknown call(s) {bad}; known: {sorted(names)}")
        return self


class Seed(Strict):
    """An action issued before the case starts (``at`` is negative)."""

    app: str
    instance: str
    action: Action
    policy: str
    at: Offset
    outcome: Outcome = Outcome.PENDING


class Case(Strict):
    name: str
    description: str = ""
    policies: list[str] = Field(default_factory=list)
    inline: str | list[dict[str, Any]] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    leader: bool = True
    ledger: list[Seed] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _steps_in_time_order(self) -> Case:
        times = [s.at for s in self.steps]
        if times != sorted(times):
            raise ValueError("steps must be in time order")
        return self


# --- what happened --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One decision as the runner shows and compares it."""

    kind: str  # approved | refused | dry_run
    app: str
    instance: str | None
    action: str | None
    reason: str | None
    numbers: Mapping[str, int] = field(default_factory=dict)

    def matches(self, kind: str, want: ExpectedDecision) -> bool:
        if kind != self.kind or want.app != self.app:
            return False
        if want.instance is not None and want.instance != self.instance:
            return False
        if want.action is not None and want.action.value != self.action:
            return False
        if want.reason is not None and want.reason.value != self.reason:
            return False
        for key in ARITHMETIC_KEYS:
            value = getattr(want, key)
            if value is not None and self.numbers.get(key) != value:
                return False
        return True

    def show(self) -> str:
        return f"{self.kind:<8} " + _describe(
            self.app, self.instance, self.action, self.reason, self.numbers
        )


def _describe(
    app: str,
    instance: str | None,
    action: str | None,
    reason: str | None,
    numbers: Mapping[str, Any],
) -> str:
    text = f"{app}/{instance or '*'} {action or '*'}"
    if reason:
        text += f": {reason}"
    if numbers:
        text += " (" + ", ".join(f"{k} {v}" for k, v in numbers.items()) + ")"
    return text


def _seen(d: Decision) -> Seen:
    a = d.arithmetic
    numbers = {}
    if a is not None:
        numbers = {k: getattr(a, k) for k in ARITHMETIC_KEYS}
    p = d.proposal
    reason = d.reason.value if d.reason is not None else None
    return Seen(d.outcome.value, p.app_id, p.instance_id, p.action.value, reason, numbers)


@dataclass
class Record:
    """One issued action in the runner's in-memory ledger."""

    app: str
    instance: str
    action: Action
    rules: PolicyRules
    issued_at: datetime
    outcome: Outcome = Outcome.PENDING
    healthy_since: datetime | None = None
    closed_at: datetime | None = None

    @property
    def deadline(self) -> datetime:
        return self.issued_at + self.rules.verify_timeout


@dataclass
class CaseResult:
    name: str
    source: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- loading -------------------------------------------------------------------------------------


def read_cases(path: Path) -> list[Case | str]:
    """The cases in one file; a case that does not load is its error message instead."""
    yaml = YAML(typ="safe", pure=True)
    try:
        docs = [d for d in yaml.load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, YAMLError) as exc:
        return [f"{path}: cannot read: {exc}"]
    out: list[Case | str] = []
    for n, doc in enumerate(docs, 1):
        try:
            out.append(Case.model_validate(doc))
        except ValidationError as exc:
            out.append(f"{path} (case {n}): {exc}")
    return out


def _policies_for(case: Case, library: Mapping[str, Policy]) -> list[Policy]:
    chosen: list[Policy] = []
    for name in case.policies:
        if name not in library:
            raise CaseError(f"policy {name!r} not found in the policy directory")
        chosen.append(library[name])
    if case.inline is not None:
        # Through the production loader, so an inline policy is checked like a file.
        if isinstance(case.inline, str):
            text = case.inline
        else:
            text = "\n---\n".join(json.dumps(doc) for doc in case.inline)
        loaded = load_text(text, f"{case.name} (inline)")
        if not loaded.ok:
            raise CaseError("; ".join(str(e) for e in loaded.errors))
        chosen.extend(loaded.policies)
    return chosen


def load_library(directory: Path | None) -> tuple[dict[str, Policy], list[str]]:
    """Policies by name from ``--policies DIR`` (none when there is no directory)."""
    if directory is None or not directory.is_dir():
        return {}, []
    loaded = load_directory(directory)
    return {p.name: p for p in loaded.policies}, [str(e) for e in loaded.errors]


# --- running -------------------------------------------------------------------------------------


class Runner:
    """One case's world: the apps as last described, the ledger, the memory, the brake."""

    def __init__(self, case: Case, policies: Sequence[Policy]) -> None:
        self.case = case
        self.policies = list(policies)
        self.rules = {p.name: p.rules() for p in self.policies}
        self.config = GuardConfig.model_validate(case.config)
        self.apps: dict[str, dict[str, Any]] = {}
        self.records: list[Record] = []
        self.memory = ConditionMemory()
        self.brake = BrakeState()
        self.bucket = BucketState()
        self.suspended: frozenset[str] = frozenset()
        for seed in case.ledger:
            rules = self.rules.get(seed.policy, PolicyRules(name=seed.policy))
            closed = None if seed.outcome is Outcome.PENDING else EPOCH + seed.at
            rec = Record(seed.app, seed.instance, seed.action, rules, EPOCH + seed.at)
            rec.outcome, rec.closed_at = seed.outcome, closed
            self.records.append(rec)

    def run(self) -> list[str]:
        failures: list[str] = []
        for n, step in enumerate(self.case.steps, 1):
            seen = self.step(step)
            if step.expect is not None:
                problems = self.check(step.expect, seen)
                if problems:
                    label = f"step {n} (at {_show_offset(step.at)})"
                    actual = [f"      {s.show()}" for s in seen] or ["      (no decisions)"]
                    failures.append(
                        "\n".join([f"  {label}:", *problems, "    actual decisions:", *actual])
                    )
        return failures

    def step(self, step: Step) -> list[Seen]:
        now = EPOCH + step.at
        for app_id, spec in step.apps.items():
            self.apps[app_id] = spec

        # Observe: the same payloads and parsing as production.
        snapshots: dict[str, AppSnapshot] = {}
        calls = failed_calls = 0
        for app_id, spec in sorted(self.apps.items()):
            failed = set(step.fail_calls) | set(spec.get("fail_calls") or [])
            snap_failed = failed & set(CALLS)
            payloads = app_payloads(app_id, spec)
            snapshots[app_id] = parse_snapshot(app_id, payloads, now, failed=snap_failed)
            calls += len(CALLS)
            failed_calls += len(snap_failed)

        # Verify what is pending, and put healed instances that failed again back on record.
        self.verify(snapshots, now)

        # Evaluate complete snapshots only; an incomplete one is skipped whole.
        seen: list[Seen] = []
        proposals: list[Proposal] = []
        counter = unhealed_counter(self.attempts(), now)
        for app_id, snap in snapshots.items():
            if not snap.complete:
                seen.append(Seen("refused", app_id, None, None, Reason.STALE_SNAPSHOT.value))
                continue
            evaluation = evaluate(self.policies, snap, self.memory, now, attempts=counter)
            self.memory = evaluation.memory
            proposals.extend(evaluation.proposals)

        # Judge: one sweep, the fleet brake judged on it.
        rate = step.api_error_rate
        if rate is None and calls:
            rate = failed_calls / calls
        ledger = LedgerView(
            in_flight=self.in_flight(),
            attempts=self.attempts(),
            suspended_policies=self.suspended,
            bucket=self.bucket,
            fleet_brake=self.brake,
            api_error_rate=rate,
            api_calls=calls if step.api_error_rate is None else None,
            leader=self.case.leader,
        )
        result = decide(snapshots, ledger, proposals, self.config, now, whole_sweep=True)
        self.brake, self.bucket = result.brake, result.bucket
        self.suspended = self.suspended | result.suspend
        seen.extend(_seen(d) for d in result.decisions)

        # Execute: one call per app and action, answered here.
        self.execute([d for d in result.decisions if d.outcome is Verdict.APPROVED], step, now)
        return seen

    def verify(self, snapshots: Mapping[str, AppSnapshot], now: datetime) -> None:
        health = self.config.health
        for rec in self.records:
            snap = snapshots.get(rec.app)
            complete = snap is not None and snap.complete
            inst = snap.instances.get(rec.instance) if snap is not None else None
            if rec.outcome is Outcome.PENDING:
                issued = Issued(rec.app, rec.instance, rec.action, rec.issued_at, rec.healthy_since)
                v = verify(issued, inst, now, rec.rules, seen=complete, health=health)
                rec.healthy_since = v.healthy_since
                if v.closed:
                    rec.outcome, rec.closed_at = v.outcome, now
                continue
            # Failing again inside the probation turns a heal into an unhealed attempt.
            healed_at = rec.closed_at if rec.outcome is Outcome.HEALED else None
            probation = self.config.probation
            if (
                complete
                and healed_at
                and flapped(rec.action, healed_at, inst, now, probation, health)
            ):
                rec.outcome = Outcome.NOT_HEALED

    def execute(self, approved: Sequence[Decision], step: Step, now: datetime) -> None:
        calls: dict[tuple[str, Action], list[Decision]] = {}
        for d in approved:
            calls.setdefault((d.proposal.app_id, d.proposal.action), []).append(d)
        for (app_id, action), decisions in sorted(calls.items()):
            ids = sorted(d.proposal.instance_id for d in decisions)
            if action.value in step.fail_calls:
                # The POST answered 500: nothing is known to have happened; all failed.
                answer = ActionResult(failed_instances=ids)
            else:
                failing = {i for i in ids if i in step.fail or f"{app_id}/{i}" in step.fail}
                silent = {i for i in ids if i in step.unknown or f"{app_id}/{i}" in step.unknown}
                body = {
                    "success_instances": [i for i in ids if i not in failing | silent],
                    "failed_instances": [i for i in ids if i in failing and i not in silent],
                }
                answer = ActionResult.model_validate_json(json.dumps(body))
            answer = answer.with_requested(ids)
            by_id = {d.proposal.instance_id: d for d in decisions}
            for iid in ids:
                rec = Record(app_id, iid, action, by_id[iid].proposal.policy, now)
                if iid in answer.failed_instances:
                    rec.outcome, rec.closed_at = Outcome.FAILED, now
                self.records.append(rec)

    def in_flight(self) -> tuple[InFlight, ...]:
        return tuple(
            InFlight(
                r.app,
                r.instance,
                r.action.value,
                r.rules.name,
                r.issued_at,
                r.deadline,
                disruptive=Proposal(r.rules, r.app, r.instance, r.action).disruptive,
            )
            for r in self.records
            if r.outcome is Outcome.PENDING
        )

    def attempts(self) -> tuple[Attempt, ...]:
        return tuple(
            Attempt(r.app, r.instance, r.rules.name, r.action.value, r.issued_at, r.outcome)
            for r in self.records
        )

    def check(self, expect: Expect, seen: list[Seen]) -> list[str]:
        problems: list[str] = []
        left = list(seen)
        for kind, wanted in (
            ("approved", expect.actions),
            ("refused", expect.refused),
            ("dry_run", expect.dry_run),
        ):
            for want in wanted:
                hit = next((s for s in left if s.matches(kind, want)), None)
                if hit is None:
                    problems.append(f"    expected {kind:<8} {want.show()}: did not happen")
                else:
                    left.remove(hit)
        if expect.only:
            problems.extend(f"    unexpected {s.show()}" for s in left)

        for out in expect.outcomes:
            recs = [
                r
                for r in self.records
                if r.app == out.app
                and r.instance == out.instance
                and (out.action is None or r.action is out.action)
            ]
            got = recs[-1].outcome.value if recs else "no action on record"
            if got != out.outcome.value:
                problems.append(
                    f"    expected outcome {out.app}/{out.instance}: {out.outcome.value}, got {got}"
                )
        return problems


def _show_offset(at: timedelta) -> str:
    seconds = int(at.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    return sign + text


def run_case(case: Case, library: Mapping[str, Policy], source: str) -> CaseResult:
    result = CaseResult(case.name, source)
    try:
        policies = _policies_for(case, library)
        runner = Runner(case, policies)
        result.failures = runner.run()
    except (CaseError, ValidationError) as exc:
        result.failures = [f"  case error: {exc}"]
    return result


def run_files(paths: Iterable[Path], policies_dir: Path | None) -> list[CaseResult]:
    """Every case of every file, in order."""
    results: list[CaseResult] = []
    cache: dict[Path | None, tuple[dict[str, Policy], list[str]]] = {}
    for path in paths:
        directory = policies_dir if policies_dir is not None else _default_policies(path)
        if directory not in cache:
            cache[directory] = load_library(directory)
        library, errors = cache[directory]
        for case in read_cases(path):
            if isinstance(case, str):
                results.append(CaseResult("(unreadable)", str(path), [f"  {case}"]))
                continue
            if errors and case.policies:
                msg = f"  policy directory {directory} has errors: " + "; ".join(errors)
                results.append(CaseResult(case.name, str(path), [msg]))
                continue
            results.append(run_case(case, library, str(path)))
    return results


def _default_policies(case_file: Path) -> Path | None:
    """``policies/tests/x.yaml`` tests the policies in ``policies/``; otherwise ``./policies``."""
    parent = case_file.resolve().parent
    if parent.name == "tests" and any(parent.parent.glob("*.yaml")):
        return parent.parent
    here = Path("policies")
    return here if here.is_dir() else None
