"""Policy test cases: read a case, run it through the production engine, compare.

This is the engine of ``healer test`` (DESIGN section 5). A case describes
apps over time; each step is one sweep of the daemon's own ``Engine``. The
engine's real CloudPilot client asks this runner, through
``httpx.MockTransport``, for the payloads the case implies (``payloads.py``),
so they go through the production parsing; its real store keeps the ledger
across steps, in memory. Evaluation, the guard, execution, verification,
flap damping, cooldowns, rate limits, the fleet brake and the token bucket
are all the daemon's. The runner only answers CloudPilot's calls (a call
named in ``fail_calls`` gets HTTP 500) and compares what happened with what
the case expects.

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

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from healer.cases.payloads import CaseError, app_payloads
from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import QUERY_CALLS, ClientConfig
from healer.cloudpilot.models import Action
from healer.engine.engine import GUARD_OUTCOME, Engine, request_counter
from healer.files import read_text
from healer.guard.config import GuardConfig
from healer.guard.decide import Decision
from healer.guard.ledger import Outcome
from healer.guard.reasons import Reason
from healer.model import PolicyRules
from healer.observe.metrics import HealerMetrics
from healer.policy.durations import parse_duration
from healer.policy.loader import load_directory, load_text, position, strip_tags
from healer.policy.model import Policy
from healer.policy.yamlread import Document, Pos, read_documents
from healer.store import ActionRow, Store
from healer.store import Outcome as StoreOutcome

#: Where case time starts: step ``at: 0s``.
EPOCH = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)

#: A case file larger than this is not one (and is not read whole, nor waited on).
MAX_CASE_BYTES = 4 * 1024 * 1024

ARITHMETIC_KEYS = ("R", "required", "available", "cost", "spent_before", "in_flight", "unhealthy")


def _signed_duration(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            return -parse_duration(text[1:])
        return parse_duration(text)
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    # A bare number would be read as seconds by pydantic, unbounded: say how to write it.
    raise ValueError(f"expected a duration like 90s, 5m or -10m, got {value!r}")


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

    def says_something(self) -> bool:
        """Whether this expectation can fail: it lists something, or says nothing else happens."""
        return self.only or bool(self.actions or self.refused or self.dry_run or self.outcomes)


class Step(Strict):
    at: Offset = timedelta(0)
    apps: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fail_calls: list[str] = Field(default_factory=list)
    fail: list[str] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)
    expect: Expect | None = None

    @model_validator(mode="after")
    def _known_calls(self) -> Step:
        names = set(QUERY_CALLS) | {a.value for a in Action}
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

    @field_validator("at")
    @classmethod
    def _before_the_case(cls, at: timedelta) -> timedelta:
        if at > timedelta(0):
            raise ValueError("a ledger entry was issued before the case starts: at 0s or earlier")
        return at


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

    @model_validator(mode="after")
    def _expects_something(self) -> Case:
        # A case that expects nothing passes whatever healer does: it tests nothing.
        if not any(s.expect is not None and s.expect.says_something() for s in self.steps):
            raise ValueError("no step has an `expect` (decisions, outcomes or `only: true`)")
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
class CaseResult:
    name: str
    source: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- loading -------------------------------------------------------------------------------------


def read_cases(path: Path) -> list[Case | str]:
    """The cases in one file; a case that does not load is its errors instead.

    Read with the policy reader (no tags, no duplicate keys; anchors and aliases
    allowed within a bound), and every error says ``file:line:col``, down to a
    misspelt field of one instance.
    """
    try:
        text = read_text(path, MAX_CASE_BYTES)
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot read: {exc}"]
    docs, problems = read_documents(text, aliases=True, kind="test cases")
    if problems:
        return ["\n  ".join(f"{path}:{p.pos.line}:{p.pos.col}: {p.message}" for p in problems)]
    out: list[Case | str] = []
    for doc in docs:
        if doc.value is None:
            continue
        case, errors = _read_case(doc)
        if case is None or errors:
            out.append("\n  ".join(f"{path}:{pos.line}:{pos.col}: {msg}" for pos, msg in errors))
        else:
            out.append(case)
    return out


def _positioned(
    doc: Document, exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[tuple[Pos, str]]:
    """A validation error's entries, each at the position of the key or value it names."""
    found = []
    for err in exc.errors():
        loc = (*prefix, *strip_tags(err["loc"]))
        pos = position(doc, loc, key=err["type"] == "extra_forbidden")
        found.append((pos, f"{'.'.join(str(p) for p in loc) or 'case'}: {err['msg']}"))
    return found


def _read_case(doc: Document) -> tuple[Case | None, list[tuple[Pos, str]]]:
    """One case document as a case, and everything wrong with it, each at its position."""
    try:
        case = Case.model_validate(doc.value)
    except ValidationError as exc:
        return None, _positioned(doc, exc)
    # The guard settings and the apps as the runner will use them, checked now so that
    # errors have a line.
    found = []
    try:
        GuardConfig.model_validate(case.config)
    except ValidationError as exc:
        found += _positioned(doc, exc, ("config",))
    for n, step in enumerate(case.steps):
        for app_id, spec in step.apps.items():
            try:
                app_payloads(app_id, spec)
            except CaseError as exc:
                loc = ("steps", n, "apps", app_id, *exc.path)
                found.append((position(doc, loc, key=bool(exc.path)), str(exc)))
    return case, found


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
    """One case's world: the apps as last described, answered to a production engine.

    The engine is the daemon's own (``healer.engine.Engine``) with its real
    client, talking to this runner through ``httpx.MockTransport`` instead of
    the network, and its real store, in memory. Caching and spreading are
    off, and time is the case's.
    """

    def __init__(self, case: Case, policies: Sequence[Policy]) -> None:
        self.case = case
        self.policies = list(policies)
        self.config = GuardConfig.model_validate(case.config)
        self.client_config = ClientConfig(base_url="http://127.0.0.1:9", query_retries=0)
        self.calls = {
            self.client_config.paths.for_call(name): name
            for name in (*QUERY_CALLS, *(a.value for a in Action))
        }
        self.apps: dict[str, dict[str, Any]] = {}
        self.payloads: dict[str, dict[str, Any]] = {}
        self.step_now: Step = Step()
        self.now = EPOCH

    async def run(self) -> list[str]:
        store = await Store.open("sqlite://")
        counter = request_counter(None)
        client = CloudPilotClient(
            self.client_config, on_request=counter, transport=httpx.MockTransport(self.answer)
        )
        try:
            engine = Engine(
                client=client,
                store=store,
                guard=self.config,
                metrics=HealerMetrics(),
                calls=counter,
                poll_interval=timedelta(seconds=10),
                observe_spread=0.0,
                replica_id="healer-test",
                meta_ttl=timedelta(0),
                budget_ttl=timedelta(0),
                address_ttl=timedelta(0),
                clock=lambda: self.now,
            )
            engine.policies = self.policies
            engine.leader = self.case.leader
            await self.seed(store)
            await engine.start()
            return await self.steps(engine, store)
        finally:
            await client.aclose()
            await store.close()

    async def seed(self, store: Store) -> None:
        """Actions issued before the case starts, written as the engine would have."""
        rules = {p.name: p.rules() for p in self.policies}
        for seed in self.case.ledger:
            rule = rules.get(seed.policy, PolicyRules(name=seed.policy))
            issued_at = EPOCH + seed.at
            row = ActionRow(
                app_id=seed.app,
                instance_id=seed.instance,
                policy=seed.policy,
                action=seed.action.value,
                params={},
                issued_at=issued_at,
                deadline=issued_at + rule.verify_timeout,
            )
            action_id = await store.issue_action(row)
            await store.set_outcome(action_id, SEED_OUTCOME[seed.outcome], issued_at)

    async def steps(self, engine: Engine, store: Store) -> list[str]:
        failures: list[str] = []
        for n, step in enumerate(self.case.steps, 1):
            self.now = EPOCH + step.at
            self.step_now = step
            for app_id, spec in step.apps.items():
                self.apps[app_id] = spec
                self.payloads[app_id] = app_payloads(app_id, spec)

            result = await engine.sweep(sorted(self.apps))
            seen = [
                Seen("refused", app_id, None, None, Reason.STALE_SNAPSHOT.value)
                for app_id, snap in sorted(result.snapshots.items())
                if not snap.complete
            ]
            seen.extend(_seen(d) for d in result.decisions)
            if step.expect is not None:
                problems = self.check(step.expect, seen)
                problems += await self.check_outcomes(step.expect, store)
                if problems:
                    label = f"step {n} (at {_show_offset(step.at)})"
                    actual = [f"      {s.show()}" for s in seen] or ["      (no decisions)"]
                    failures.append(
                        "\n".join([f"  {label}:", *problems, "    actual decisions:", *actual])
                    )
        return failures

    # -- CloudPilot, as the case describes it ----------------------------------------------------

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The answer CloudPilot would give in the current step; failed calls get HTTP 500."""
        call = self.calls.get(request.url.path)
        if call is None:
            return httpx.Response(404, json={"code": 404, "message": "no such path"})
        step = self.step_now
        if request.method == "POST":
            body = json.loads(request.content)
            return self.act(call, str(body["app_id"]), [str(i) for i in body["instance_ids"]])

        app_id = request.url.params.get("app_id", "")
        spec = self.apps.get(app_id)
        if spec is None:
            return httpx.Response(404, json={"code": 404, "message": f"no app {app_id}"})
        failed = set(step.fail_calls) | set(spec.get("fail_calls") or [])
        if call in failed:
            return httpx.Response(500, text="<html>500 Internal Server Error</html>")
        payloads = self.payloads[app_id]
        if call == "instance_by_addr":
            return httpx.Response(200, json={"instance_id": self.by_address(payloads, request)})
        if call == "hard_limits":
            return httpx.Response(200, json={})
        return httpx.Response(200, json=payloads[call])

    def act(self, call: str, app_id: str, ids: list[str]) -> httpx.Response:
        step = self.step_now
        if call in step.fail_calls:
            # The POST answered 500: nothing is known to have happened.
            return httpx.Response(500, text="<html>500 Internal Server Error</html>")
        failing = {i for i in ids if i in step.fail or f"{app_id}/{i}" in step.fail}
        silent = {i for i in ids if i in step.unknown or f"{app_id}/{i}" in step.unknown}
        return httpx.Response(
            200,
            json={
                "success_instances": [i for i in ids if i not in failing | silent],
                "failed_instances": [i for i in ids if i in failing and i not in silent],
            },
        )

    @staticmethod
    def by_address(payloads: Mapping[str, Any], request: httpx.Request) -> str | None:
        host = request.url.params.get("host_ip")
        port = request.url.params.get("port")
        for info in payloads["instance_info"]["instance_info_list"]:
            if info.get("host_ip") == host and str(info.get("main_port")) == port:
                return str(info["instance_id"])
        return None

    # -- expectations ----------------------------------------------------------------------------

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
        return problems

    async def check_outcomes(self, expect: Expect, store: Store) -> list[str]:
        problems: list[str] = []
        for out in expect.outcomes:
            recs = await store.actions(app_id=out.app, instance_id=out.instance, limit=10_000)
            recs = [r for r in recs if out.action is None or r.action == out.action.value]
            # Newest first; the verdict the guard would read from the latest one.
            got = GUARD_OUTCOME[recs[0].outcome].value if recs else "no action on record"
            if got != out.outcome.value:
                problems.append(
                    f"    expected outcome {out.app}/{out.instance}: {out.outcome.value}, got {got}"
                )
        return problems


#: How a seeded outcome is written to the store.
SEED_OUTCOME: dict[Outcome, StoreOutcome] = {
    Outcome.PENDING: StoreOutcome.IN_FLIGHT,
    Outcome.HEALED: StoreOutcome.HEALED,
    Outcome.NOT_HEALED: StoreOutcome.NOT_HEALED,
    Outcome.FAILED: StoreOutcome.FAILED,
    Outcome.UNKNOWN: StoreOutcome.UNKNOWN,
}


def _show_offset(at: timedelta) -> str:
    seconds = int(at.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    return sign + text


async def run_case(case: Case, library: Mapping[str, Policy], source: str) -> CaseResult:
    result = CaseResult(case.name, source)
    try:
        policies = _policies_for(case, library)
        runner = Runner(case, policies)
        result.failures = await runner.run()
    except (CaseError, ValidationError) as exc:
        result.failures = [f"  case error: {exc}"]
    except RecursionError:
        # Aliases can nest a value deeper than anything here walks.
        result.failures = ["  case error: values nested too deeply (through aliases?)"]
    return result


async def run_files(paths: Iterable[Path], policies_dir: Path | None) -> list[CaseResult]:
    """Every case of every file, in order."""
    results: list[CaseResult] = []
    cache: dict[Path | None, tuple[dict[str, Policy], list[str]]] = {}
    told: set[Path | None] = set()
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
                # The directory's errors are listed once, by the first case that meets them.
                if directory not in told:
                    told.add(directory)
                    listed = "".join(f"\n    {e}" for e in errors)
                    msg = f"  policy directory {directory} has errors:{listed}"
                else:
                    msg = f"  policy directory {directory} has errors (listed above)"
                results.append(CaseResult(case.name, str(path), [msg]))
                continue
            results.append(await run_case(case, library, str(path)))
    return results


def _default_policies(case_file: Path) -> Path | None:
    """``policies/tests/x.yaml`` tests the policies in ``policies/``; otherwise ``./policies``."""
    parent = case_file.resolve().parent
    if parent.name == "tests" and any(parent.parent.glob("*.yaml")):
        return parent.parent
    here = Path("policies")
    return here if here.is_dir() else None
