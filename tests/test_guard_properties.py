"""Properties of the guard over random fleets, budgets, states, in-flight sets and proposals.

1. Approved disruptive actions never take ``available`` below ``required``
   (both counted here independently of the guard), never touch an instance
   twice, and never touch an app whose budget is unknown; and the guard's
   ``required`` is the one DESIGN section 3 gives.
2. A refused proposal changes nothing: without it, every other decision and
   what the sweep spends are the same.
3. Decisions do not depend on the order proposals arrive in.

At least 2,000 examples each under ``CI=true`` (profile ``guard-ci``).
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.cases.payloads import snapshot_of
from healer.cloudpilot.models import Action
from healer.guard import GuardConfig, InFlight, LedgerView, Verdict, compute_budget, decide
from healer.model import PolicyRules, Proposal
from healer.snapshot import AppSnapshot

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

settings.register_profile(
    "guard-ci",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "guard-dev",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile("guard-ci" if IN_CI else "guard-dev")

STATES = ["RUNNING"] * 6 + ["UNKNOWN", "INVALID_STATE", "RESTARTING", "STOP", "NEW", "WEIRD"]
FLAGS = ["frozen", "disabled", "under_repair", "migrating"]

POLICIES = [
    PolicyRules(name="hi", priority=100),
    PolicyRules(name="mid", priority=50, max_in_flight=3, per_cycle=2),
    PolicyRules(name="lo", priority=0, max_unhealthy=0.9),
    PolicyRules(name="dry", priority=70, dry_run=True),
]


ABSENT = "absent"

#: Snapshots, the ledger's view, the proposals, which (app, instance) truly serve, and each
#: app's budget payload as drawn.
Fleet = tuple[
    dict[str, AppSnapshot],
    LedgerView,
    list[Proposal],
    frozenset[tuple[str, str]],
    dict[str, dict[str, Any] | None],
]


def _instance(parts: tuple[str, str | None, str | None, str | None]) -> dict[str, Any]:
    state, flag, agent, proc = parts
    spec: dict[str, Any] = {"status": state}
    if flag is not None:
        spec[flag] = True
    if agent != ABSENT:
        spec["pass_agent_state"] = agent
    if proc != ABSENT:
        spec["proc_state"] = proc
    return spec


# Strategies built once: hypothesis spends most of its time drawing, so draw little.
INSTANCES = st.tuples(
    st.sampled_from(STATES),
    st.sampled_from([None] * 12 + FLAGS),
    st.sampled_from([ABSENT] * 6 + ["DOWN", None, "ok"]),
    st.sampled_from([ABSENT] * 8 + ["DEAD", None]),
).map(_instance)
RATIOS = st.integers(0, 100) | st.sampled_from(["14", "80", "33.3"])
MIN_USABLE = st.sampled_from([0, 0.14, 0.5, 1, 14, 60, 100])
KINDS = st.sampled_from(["ratio", "ratio", "min_usable", "floor", "odd", "none"])
ACTIONS = st.sampled_from(list(Action))
RULES = st.sampled_from(POLICIES)


@st.composite
def budgets(draw: st.DrawFn, replica: int) -> dict[str, Any] | None:
    kind = draw(KINDS)
    if kind == "none":
        return None
    if kind == "odd":
        return {"instanceControlBudget": {"type": "Other", "value": 1}, "replica": replica}
    out: dict[str, Any] = {"replica": replica}
    if kind in ("ratio", "floor"):
        out["instanceControlBudget"] = {"type": "MinAvailableRatio", "value": draw(RATIOS)}
    if kind == "min_usable":
        out["minUsable"] = draw(MIN_USABLE)
    if kind == "floor":
        out["replica_that_at_least_need_to_keep"] = draw(st.integers(0, replica + 1))
    return out


def oracle_required(budget: dict[str, Any] | None) -> int | None:
    """``required`` by DESIGN section 3, worked out here apart from the guard; None: unknown.

    Only the budget shapes ``budgets`` draws: each value read exactly from its text.
    """
    if budget is None:
        return None
    R = budget["replica"]
    required = budget.get("replica_that_at_least_need_to_keep", 0)
    control = budget.get("instanceControlBudget")
    if control is not None:
        if control["type"] != "MinAvailableRatio":
            return None
        required = max(required, math.ceil(Fraction(str(control["value"])) * R / 100))
    mu = Fraction(str(budget.get("minUsable", 0)))
    if 0 < mu <= 1:
        required = max(required, math.ceil(mu * R))
    elif mu > 1:
        required = max(required, math.ceil(mu * R / 100))
    return int(required)


def truly_serving(spec: dict[str, Any]) -> bool:
    """Serving by the instance's true state, whether or not the API's top-five lists name it."""
    deliberate = any(spec.get(flag) for flag in ("disabled", "under_repair", "migrating"))
    return spec["status"] == "RUNNING" and not deliberate and spec.get("proc_state") != "DEAD"


@st.composite
def fleets(draw: st.DrawFn) -> Fleet:
    snaps: dict[str, AppSnapshot] = {}
    in_flight: list[InFlight] = []
    proposals: list[Proposal] = []
    serving: set[tuple[str, str]] = set()
    drawn: dict[str, dict[str, Any] | None] = {}
    for k in range(draw(st.integers(1, 3))):
        app_id = f"app{k}"
        # Sometimes more instances share a state than the top-five lists can name, so
        # that some instances' states are unresolved while they may well be RUNNING.
        crowd = draw(st.sampled_from([None] * 3 + ["UNKNOWN", "STOP"]))
        replica = draw(st.integers(1, 7) if crowd is None else st.integers(11, 13))
        count = replica + draw(st.integers(0, 1))
        instances = {f"{app_id}.{n:02}": draw(INSTANCES) for n in range(count)}
        if crowd is not None:
            for n, iid in enumerate(instances):
                instances[iid] = {"status": crowd} if n < 6 else {"status": "RUNNING"}
        serving |= {(app_id, iid) for iid, s in instances.items() if truly_serving(s)}
        spec: dict[str, Any] = {"instances": instances}
        budget = draw(budgets(replica))
        drawn[app_id] = budget
        if budget is not None:
            spec["budget"] = budget
        failed = ("instance_info",) if draw(st.integers(0, 15)) == 0 else ()
        snaps[app_id] = snapshot_of(app_id, spec, NOW, failed)

        ids = sorted(instances)
        for iid in draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)):
            deadline = NOW + timedelta(minutes=draw(st.sampled_from([-5, 5])))
            in_flight.append(InFlight(app_id, iid, "restart", "hi", NOW, deadline))
        targets = st.sampled_from([*ids, f"{app_id}.ghost"])
        for _ in range(draw(st.integers(0, 5))):
            proposals.append(
                Proposal(
                    policy=draw(RULES),
                    app_id=app_id,
                    instance_id=draw(targets),
                    action=draw(ACTIONS),
                )
            )
    return snaps, LedgerView(in_flight=tuple(in_flight)), proposals, frozenset(serving), drawn


CONFIGS = st.builds(
    GuardConfig,
    max_in_flight=st.integers(0, 4),
    fleet_max_in_flight=st.none() | st.integers(0, 4),
    bucket=st.sampled_from([{"burst": 30}, {"burst": 2, "rate_per_hour": 0}]),
    capacity_effects=st.sampled_from([{}, {Action.MIGRATE: "extend"}]),
)


def outcomes(result: Any) -> list[tuple[str, str | None]]:
    return [(d.outcome.value, d.reason) for d in result.decisions]


def approved_disruptive_actions_never_take_an_app_below_its_budget(
    fleet: Fleet, config: GuardConfig, result: Any
) -> None:
    snaps, ledger, _, serving, budgets_by_app = fleet
    busy = {(r.app_id, r.instance_id) for r in ledger.in_flight if r.open_at(NOW)}
    touched: set[tuple[str, str]] = set()
    for app_id, snap in snaps.items():
        approved = [
            d.proposal
            for d in result.decisions
            if d.outcome is Verdict.APPROVED and d.proposal.app_id == app_id
        ]
        for p in approved:
            key = (app_id, p.instance_id)
            assert key not in touched, f"{key} approved twice"
            assert key not in busy, f"{key} approved while in flight"
            touched.add(key)
        disruptive = [p for p in approved if p.disruptive]
        if not disruptive:
            continue
        required = oracle_required(budgets_by_app[app_id])
        assert snap.complete and required is not None, f"{app_id}: acted without a known budget"
        # Counted from the true states, not the snapshot's: an instance the top-five
        # lists leave unnamed may be serving, and acting on it costs the budget.
        available = {
            iid for iid in snap.instances if (app_id, iid) in serving and (app_id, iid) not in busy
        }
        taken = available & {p.instance_id for p in disruptive}
        if taken:
            left = len(available) - len(taken)
            assert left >= required, f"{app_id}: {left} left < {required}"


def the_budget_is_the_one_design_gives(fleet: Fleet) -> None:
    snaps, *_, budgets_by_app = fleet
    for app_id, snap in snaps.items():
        budget, expected = compute_budget(snap), oracle_required(budgets_by_app[app_id])

        assert budget.known is (expected is not None), f"{app_id}: {budget}"
        if expected is not None:
            assert budget.required == expected, f"{app_id}: {budget.required} != {expected}"


def a_refused_proposal_changes_nothing(fleet: Fleet, config: GuardConfig, result: Any) -> None:
    snaps, ledger, proposals, *_ = fleet
    for i, d in enumerate(result.decisions):
        if d.outcome is not Verdict.REFUSED:
            continue
        without = decide(snaps, ledger, proposals[:i] + proposals[i + 1 :], config, NOW)
        rest = outcomes(result)
        del rest[i]
        assert outcomes(without) == rest, f"refusing {d.proposal} changed the others"
        assert without.tokens_spent == result.tokens_spent


def decisions_do_not_depend_on_arrival_order(
    fleet: Fleet, config: GuardConfig, result: Any, order: list[int]
) -> None:
    snaps, ledger, proposals, *_ = fleet
    second = decide(snaps, ledger, [proposals[i] for i in order], config, NOW)

    def keyed(r: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (d.proposal.sort_key(), d.proposal.app_id, d.outcome.value, d.reason or "")
            for d in r.decisions
        )

    assert keyed(result) == keyed(second)
    assert result.tokens_spent == second.tokens_spent


# One generated sweep checks all three properties: drawing a fleet is what costs time
# (hypothesis's engine, ~10 ms an example), so each example serves every property.
@PROFILE
@given(fleets(), CONFIGS, st.randoms(use_true_random=False))
def test_the_guard_is_safe_spends_only_on_approval_and_ignores_arrival_order(
    fleet: Fleet, config: GuardConfig, rnd: Any
) -> None:
    snaps, ledger, proposals, *_ = fleet
    order = list(range(len(proposals)))
    rnd.shuffle(order)

    result = decide(snaps, ledger, proposals, config, NOW)

    the_budget_is_the_one_design_gives(fleet)
    approved_disruptive_actions_never_take_an_app_below_its_budget(fleet, config, result)
    a_refused_proposal_changes_nothing(fleet, config, result)
    decisions_do_not_depend_on_arrival_order(fleet, config, result, order)
