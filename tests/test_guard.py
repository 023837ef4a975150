"""The safety guard: budget arithmetic, every reason code, precedence, and what a sweep spends.

Expected numbers are worked out by hand from DESIGN.md section 3; each test
says the arithmetic in a comment where it is not obvious.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from healer.cases.payloads import snapshot_of
from healer.cloudpilot.models import Action, MinUsableInfo
from healer.guard import (
    Attempt,
    BrakeState,
    BucketState,
    GuardConfig,
    InFlight,
    LedgerView,
    Outcome,
    Pause,
    Reason,
    Select,
    Silence,
    Verdict,
    compute_budget,
    decide,
    sweep_health,
)
from healer.guard.config import MaintenanceWindow
from healer.guard.reasons import PRECEDENCE
from healer.model import PolicyRules, Proposal
from healer.snapshot import AppSnapshot

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
LOOSE = GuardConfig(max_in_flight=10)


def ratio(replica: int, value: Any, **extra: Any) -> dict[str, Any]:
    return {
        "instanceControlBudget": {"type": "MinAvailableRatio", "value": value},
        "replica": replica,
        **extra,
    }


def app(
    instances: dict[str, dict[str, Any]],
    budget: dict[str, Any] | None = None,
    app_id: str = "a",
    failed: tuple[str, ...] = (),
    **spec: Any,
) -> AppSnapshot:
    body: dict[str, Any] = {"instances": instances, **spec}
    if budget is not None:
        body["budget"] = budget
    return snapshot_of(app_id, body, NOW, failed)


def healthy(n: int, prefix: str = "i") -> dict[str, dict[str, Any]]:
    return {f"{prefix}{k}": {} for k in range(n)}


def rules(name: str = "p", **kw: Any) -> PolicyRules:
    return PolicyRules(name=name, **kw)


def prop(instance: str, action: Action = Action.RESTART, app_id: str = "a", **kw: Any) -> Proposal:
    return Proposal(policy=rules(**kw), app_id=app_id, instance_id=instance, action=action)


def judge(
    snaps: AppSnapshot | list[AppSnapshot],
    proposals: list[Proposal],
    ledger: LedgerView | None = None,
    config: GuardConfig = LOOSE,
    **kw: Any,
) -> list[tuple[str, str, str | None]]:
    snaps = snaps if isinstance(snaps, list) else [snaps]
    result = decide(
        {s.app_id: s for s in snaps}, ledger or LedgerView(), proposals, config, NOW, **kw
    )
    return [(d.proposal.instance_id, d.outcome.value, d.reason) for d in result.decisions]


def only_reason(snap: AppSnapshot, p: Proposal, **kw: Any) -> Reason | None:
    result = decide(
        {snap.app_id: snap}, kw.pop("ledger", LedgerView()), [p], kw.pop("config", LOOSE), NOW, **kw
    )
    return result.decisions[0].reason


# --- the budget -----------------------------------------------------------------------------------


def budget_of(info: dict[str, Any] | None, total: int | None = None) -> tuple[int, int, bool]:
    b = compute_budget(MinUsableInfo.model_validate(info) if info is not None else None, total)
    return b.R, b.required, b.known


class TestBudgetArithmetic:
    def test_eighty_percent_of_seven_keeps_six(self) -> None:
        assert budget_of(ratio(7, 80)) == (7, 6, True)

    def test_fourteen_percent_of_fifty_is_seven_not_eight(self) -> None:
        assert budget_of(ratio(50, 14)) == (50, 7, True)
        assert budget_of({"minUsable": 0.14, "replica": 50}) == (50, 7, True)
        assert budget_of({"minUsable": "14", "replica": 50}) == (50, 7, True)

    def test_a_single_replica_app_must_keep_it(self) -> None:
        assert budget_of(ratio(1, 80)) == (1, 1, True)
        assert budget_of(ratio(1, 1)) == (1, 1, True)

    def test_ratio_100_requires_every_replica(self) -> None:
        assert budget_of(ratio(4, 100)) == (4, 4, True)

    def test_min_usable_as_a_fraction_and_as_a_percent_agree(self) -> None:
        assert budget_of({"minUsable": 0.6, "replica": 5}) == (5, 3, True)
        assert budget_of({"minUsable": 60, "replica": 5}) == (5, 3, True)
        # 1 is a fraction (all of R), not 1 %.
        assert budget_of({"minUsable": 1, "replica": 5}) == (5, 5, True)

    def test_min_usable_of_zero_contributes_nothing(self) -> None:
        assert budget_of({"minUsable": 0, "replica": 5}) == (5, 0, True)

    def test_floor_above_the_ratio_wins(self) -> None:
        assert budget_of(ratio(10, 50, replica_that_at_least_need_to_keep=8)) == (10, 8, True)

    def test_a_replica_of_zero_with_instances_present_is_no_budget_at_all(self) -> None:
        # Read literally, R = 0 requires nothing and every serving instance could go.
        assert budget_of(ratio(0, 80), total=4) == (4, 4, False)
        assert budget_of({"replica": 0, "minUsable": 0}, total=3) == (3, 3, False)
        assert budget_of(ratio(0, 80), total=0) == (0, 0, True)

    def test_floor_above_r_is_kept(self) -> None:
        assert budget_of(ratio(3, 50, replica_that_at_least_need_to_keep=5)) == (3, 5, True)

    def test_largest_of_all_three_is_required(self) -> None:
        info = ratio(10, 50, replica_that_at_least_need_to_keep=2, minUsable=0.71)
        assert budget_of(info) == (10, 8, True)

    def test_r_is_the_replica_even_while_a_surge_shows_more(self) -> None:
        assert budget_of(ratio(3, 100), total=4) == (3, 3, True)

    def test_r_falls_back_to_total_num_without_replica(self) -> None:
        info = {"instanceControlBudget": {"type": "MinAvailableRatio", "value": 80}}
        assert budget_of(info, total=5) == (5, 4, True)

    def test_exact_values_arrive_as_text_decimal_or_float(self) -> None:
        assert budget_of(ratio(7, "80")) == (7, 6, True)
        assert budget_of(ratio(7, 80.0)) == (7, 6, True)
        assert budget_of(ratio(7, Decimal("80"))) == (7, 6, True)
        assert budget_of(ratio("50", "14.0")) == (50, 7, True)

    @pytest.mark.parametrize(
        "info",
        [
            None,
            ratio(5, 101),
            ratio(5, -1),
            ratio(5, None),
            ratio(5, "eighty"),
            {"instanceControlBudget": {"type": "MaxUnavailable", "value": 1}, "replica": 5},
            {"instanceControlBudget": {}, "replica": 5},
            {"minUsable": -0.5, "replica": 5},
            {"minUsable": 150, "replica": 5},
            {"minUsable": True, "replica": 5},
            {"replica_that_at_least_need_to_keep": -1, "replica": 5},
            {"replica_that_at_least_need_to_keep": 2.5, "replica": 5},
            {"replica": "five"},
            {"replica": 4.5},
        ],
    )
    def test_missing_or_odd_budgets_fail_closed(self, info: dict[str, Any] | None) -> None:
        R, required, known = budget_of(info, total=5)

        assert not known
        assert required == R == 5

    def test_budget_is_read_from_a_snapshot(self) -> None:
        snap = app(healthy(7), ratio(7, 80))

        assert compute_budget(snap).required == 6


# --- approvals and the budget in a sweep ----------------------------------------------------------


class TestSpendingTheBudget:
    def test_restarting_an_unavailable_instance_costs_nothing(self) -> None:
        # C3: replica 3, ratio 60 → required 2; i0 UNKNOWN, available 2; 2 − 0 ≥ 2.
        snap = app({"i0": {"status": "UNKNOWN"}, **healthy(2, "j")}, ratio(3, 60))

        assert judge(snap, [prop("i0")]) == [("i0", "approved", None)]

    def test_second_migrate_would_go_below_six_of_seven(self) -> None:
        # C2: required 6, available 7: i1 7 − 1 = 6 ok, i2 7 − 1 − 1 = 5 < 6.
        inst = healthy(7)
        inst["i1"] = {"pass_agent_state": "DOWN"}
        inst["i2"] = {"pass_agent_state": "DOWN"}
        snap = app(inst, ratio(7, 80))

        got = judge(snap, [prop("i2", Action.MIGRATE), prop("i1", Action.MIGRATE)])

        assert got == [("i2", "refused", "budget"), ("i1", "approved", None)]

    def test_under_repair_instances_are_not_available(self) -> None:
        # C1: required 4; available i1–i4 = 4; migrating i1 costs 1 → 3 < 4.
        inst = healthy(5)
        inst["i0"] = {"under_repair": True}
        inst["i1"] = {"pass_agent_state": "DOWN"}
        snap = app(inst, ratio(5, 80))

        result = decide({"a": snap}, LedgerView(), [prop("i1", Action.MIGRATE)], LOOSE, NOW)
        d = result.decisions[0]

        assert d.reason is Reason.BUDGET
        assert d.arithmetic is not None
        assert (d.arithmetic.available, d.arithmetic.required, d.arithmetic.cost) == (4, 4, 1)

    def test_an_absolute_floor_holds_back_the_second_disable(self) -> None:
        # C9: required 8 (floor); i0 UNKNOWN → available 9; 9 − 1 = 8 ok; 9 − 2 = 7 < 8.
        inst = healthy(10)
        inst["i0"] = {"status": "UNKNOWN"}
        inst["i1"] = {"pass_agent_state": "DOWN"}
        inst["i2"] = {"pass_agent_state": "DOWN"}
        snap = app(inst, ratio(10, 50, replica_that_at_least_need_to_keep=8))

        got = judge(snap, [prop("i1", Action.DISABLE), prop("i2", Action.DISABLE)])

        assert got == [("i1", "approved", None), ("i2", "refused", "budget")]

    def test_surge_instances_do_not_raise_r(self) -> None:
        # replica 3, ratio 100; four instances, one migrating: available 3, required 3.
        inst = healthy(4)
        inst["i3"] = {"migrating": True}
        snap = app(inst, ratio(3, 100))

        assert only_reason(snap, prop("i0")) is Reason.BUDGET

    def test_a_surge_can_pay_for_one_action(self) -> None:
        # replica 3, ratio 100, four serving instances during a surge: 4 − 1 = 3 ≥ 3.
        snap = app(healthy(4), ratio(3, 100))

        got = judge(snap, [prop("i0"), prop("i1")])

        assert got == [("i0", "approved", None), ("i1", "refused", "budget")]

    def test_higher_priority_spends_first(self) -> None:
        inst = healthy(5)
        snap = app(inst, ratio(5, 80))
        low = prop("i0", name="low", priority=1)
        high = prop("i4", name="high", priority=10)

        assert judge(snap, [low, high]) == [("i0", "refused", "budget"), ("i4", "approved", None)]

    def test_a_free_action_is_approved_even_below_budget(self) -> None:
        # ratio 100 of 3 with i0 UNKNOWN: available 2 < 3; restarting i0 costs 0 and
        # takes nothing away, but migrating the serving j0 would cost 1.
        snap = app({"i0": {"status": "UNKNOWN"}, **healthy(2, "j")}, ratio(3, 100))

        got = judge(snap, [prop("i0"), prop("j0", Action.MIGRATE)])

        assert got == [("i0", "approved", None), ("j0", "refused", "budget")]

    def test_a_single_replica_app_can_be_healed(self) -> None:
        # R = 1, ratio 80 → required 1; its only instance UNKNOWN: available 0, cost 0.
        snap = app({"i0": {"status": "UNKNOWN"}}, ratio(1, 80))

        assert only_reason(snap, prop("i0")) is None
        assert only_reason(app({"i0": {}}, ratio(1, 80)), prop("i0")) is Reason.BUDGET

    def test_restorative_actions_need_no_budget(self) -> None:
        snap = app({"i0": {"status": "STOP"}, **healthy(2, "j")}, ratio(3, 100))

        assert only_reason(snap, prop("i0", Action.START)) is None

    def test_an_agent_fault_alone_keeps_the_instance_available(self) -> None:
        snap = app({"i0": {"pass_agent_state": "DOWN"}, "i1": {}}, ratio(2, 100))

        result = decide({"a": snap}, LedgerView(), [prop("i0", Action.MIGRATE)], LOOSE, NOW)

        assert result.decisions[0].arithmetic is not None
        assert result.decisions[0].arithmetic.available == 2
        assert result.decisions[0].reason is Reason.BUDGET


# --- every reason code ----------------------------------------------------------------------------


def fine(n: int = 5, **override: dict[str, Any]) -> AppSnapshot:
    inst = healthy(n)
    inst.update(override)
    return app(inst, ratio(n, 20))


class TestEveryReason:
    def test_not_leader(self) -> None:
        assert only_reason(fine(), prop("i0"), ledger=LedgerView(leader=False)) is Reason.NOT_LEADER

    def test_paused_globally(self) -> None:
        ledger = LedgerView(pauses=(Pause(who="ann", why="incident", until=NOW + timedelta(1)),))

        assert only_reason(fine(), prop("i0"), ledger=ledger) is Reason.PAUSED

    def test_paused_per_app_and_expiry(self) -> None:
        other = Pause(who="ann", why="x", app_id="b")
        expired = Pause(who="ann", why="x", until=NOW, app_id="a")
        this = Pause(who="ann", why="x", until=NOW + timedelta(minutes=1), app_id="a")

        assert only_reason(fine(), prop("i0"), ledger=LedgerView(pauses=(other, expired))) is None
        assert only_reason(fine(), prop("i0"), ledger=LedgerView(pauses=(this,))) is Reason.PAUSED

    def test_silenced_by_a_silence(self) -> None:
        s = Silence(select=Select(app_id=["a*"]), start=NOW, end=NOW + timedelta(hours=1))
        ledger = LedgerView(silences=(s,))

        assert only_reason(fine(), prop("i0"), ledger=ledger) is Reason.SILENCED

    def test_silenced_by_a_maintenance_window(self) -> None:
        window = MaintenanceWindow(start="11:00", end="13:00", select=Select(product=["prod*"]))
        config = GuardConfig(max_in_flight=10, maintenance_windows=[window])

        assert only_reason(fine(), prop("i0"), config=config) is Reason.SILENCED

    def test_stale_snapshot(self) -> None:
        snap = app(healthy(5), ratio(5, 20), failed=("instance_info",))

        assert only_reason(snap, prop("i0")) is Reason.STALE_SNAPSHOT
        assert only_reason(fine(), prop("i0", app_id="nobody")) is Reason.STALE_SNAPSHOT
        assert only_reason(fine(), prop("ghost")) is Reason.STALE_SNAPSHOT

    def test_fleet_brake(self) -> None:
        ledger = LedgerView(fleet_brake=BrakeState(engaged=True, why="x"))

        assert only_reason(fine(), prop("i0"), ledger=ledger) is Reason.FLEET_BRAKE
        assert (
            only_reason(fine(), prop("i0", Action.ENABLE), ledger=ledger) is not Reason.FLEET_BRAKE
        )

    def test_budget_unknown(self) -> None:
        snap = app(healthy(5), {"instanceControlBudget": {"type": "Nope", "value": 1}})

        assert only_reason(snap, prop("i0")) is Reason.BUDGET_UNKNOWN
        assert only_reason(app(healthy(5)), prop("i0")) is Reason.BUDGET_UNKNOWN

    def test_rollout(self) -> None:
        snap = fine(i4={"status": "DEPLOYING"})

        assert only_reason(snap, prop("i0")) is Reason.ROLLOUT
        config = GuardConfig(max_in_flight=10, rollout_check=False)
        assert only_reason(snap, prop("i0"), config=config) is None

    def test_short_circuit(self) -> None:
        # 3 of 5 unhealthy: 60 % > 50 %.
        snap = fine(i0={"status": "UNKNOWN"}, i1={"status": "UNKNOWN"}, i2={"proc_state": "DEAD"})

        assert only_reason(snap, prop("i0")) is Reason.SHORT_CIRCUIT

    def test_short_circuit_is_per_policy(self) -> None:
        snap = fine(i0={"status": "UNKNOWN"}, i1={"status": "UNKNOWN"}, i2={"proc_state": "DEAD"})

        assert only_reason(snap, prop("i0", max_unhealthy=0.8)) is None

    def test_unhealthy_instances_the_top_five_lists_leave_unnamed_still_count(self) -> None:
        # 12 replicas, 8 UNKNOWN: the API names only five of them, but counts all eight.
        # 8 of 12 is 67 % > 50 %; counting only the five named would give 42 % and act.
        down = {f"i{k:02d}": {"status": "UNKNOWN"} for k in range(8)}
        up = {f"i{k:02d}": {} for k in range(8, 12)}
        snap = app({**down, **up}, ratio(12, 50))

        assert snap.state_counts["UNKNOWN"] == 8
        assert sum(1 for i in snap.instances.values() if i.state == "UNKNOWN") == 5
        assert only_reason(snap, prop("i00")) is Reason.SHORT_CIRCUIT

    def test_a_single_unhealthy_instance_never_trips_the_short_circuit(self) -> None:
        # R = 1: one of one unhealthy is 100 %, but it is one instance.
        snap = app({"i0": {"status": "UNKNOWN"}}, ratio(1, 0))

        assert only_reason(snap, prop("i0")) is None

    def test_half_unhealthy_is_not_over_half(self) -> None:
        snap = app(
            {"i0": {"status": "UNKNOWN"}, "i1": {"status": "UNKNOWN"}, **healthy(2)}, ratio(4, 0)
        )

        assert only_reason(snap, prop("i0")) is None

    def test_frozen_allows_only_unfreeze(self) -> None:
        snap = fine(i0={"frozen": True})

        assert only_reason(snap, prop("i0")) is Reason.FROZEN
        assert only_reason(snap, prop("i0", Action.START)) is Reason.FROZEN
        assert only_reason(snap, prop("i0", Action.UNFREEZE)) is None

    def test_disabled_allows_only_enable(self) -> None:
        snap = fine(i0={"disabled": True})

        assert only_reason(snap, prop("i0", Action.MIGRATE)) is Reason.DISABLED
        assert only_reason(snap, prop("i0", Action.ENABLE)) is None

    def test_bsn_disabled_counts_as_disabled(self) -> None:
        assert only_reason(fine(i0={"bsn_disabled": True}), prop("i0")) is Reason.DISABLED

    def test_under_repair_allows_nothing(self) -> None:
        snap = fine(i0={"under_repair": True})

        assert only_reason(snap, prop("i0", Action.INTERRUPT)) is Reason.UNDER_REPAIR

    def test_migrating_allows_nothing(self) -> None:
        snap = fine(i0={"migrating": True})

        assert only_reason(snap, prop("i0", Action.START)) is Reason.MIGRATING

    def test_in_flight_from_the_ledger(self) -> None:
        rec = InFlight(
            "a", "i0", "enable", "p", NOW - timedelta(minutes=1), NOW + timedelta(minutes=9), False
        )

        assert (
            only_reason(fine(), prop("i0", Action.START), ledger=LedgerView(in_flight=(rec,)))
            is Reason.IN_FLIGHT
        )

    def test_in_flight_within_the_sweep(self) -> None:
        got = judge(fine(), [prop("i0", name="p1"), prop("i0", Action.MIGRATE, name="p2")])

        assert got == [("i0", "approved", None), ("i0", "refused", "in_flight")]

    def test_an_in_flight_record_past_its_deadline_no_longer_holds(self) -> None:
        rec = InFlight(
            "a", "i0", "migrate", "p", NOW - timedelta(minutes=40), NOW - timedelta(minutes=10)
        )

        assert only_reason(fine(), prop("i0"), ledger=LedgerView(in_flight=(rec,))) is None

    def test_shrink_mask(self) -> None:
        snap = app(healthy(5), ratio(5, 20), meta={"shrink_mask": True})

        assert only_reason(snap, prop("i0", Action.DELETE)) is Reason.SHRINK_MASK
        assert only_reason(snap, prop("i0", Action.MIGRATE)) is None

    def test_extend_mask_with_a_configured_capacity_effect(self) -> None:
        snap = app(healthy(5), ratio(5, 20), meta={"extend_mask": True})
        config = GuardConfig(max_in_flight=10, capacity_effects={Action.MIGRATE: "extend"})

        assert only_reason(snap, prop("i0", Action.MIGRATE), config=config) is Reason.EXTEND_MASK
        assert only_reason(snap, prop("i0", Action.MIGRATE)) is None

    def test_a_missing_mask_flag_counts_as_set(self) -> None:
        snap = app(healthy(5), ratio(5, 20), meta={"shrink_mask": None})

        assert only_reason(snap, prop("i0", Action.DELETE)) is Reason.SHRINK_MASK

    def test_policy_suspended_by_the_ledger(self) -> None:
        ledger = LedgerView(suspended_policies=frozenset({"p"}))

        assert only_reason(fine(), prop("i0"), ledger=ledger) is Reason.POLICY_SUSPENDED

    def test_policy_suspended_when_recent_actions_mostly_fail_to_heal(self) -> None:
        # 5 verified outcomes, 3 not healed: 60 % > 50 % → suspended and reported.
        outcomes = [Outcome.NOT_HEALED] * 3 + [Outcome.HEALED] * 2 + [Outcome.FAILED] * 4
        attempts = tuple(
            Attempt("b", f"i{k}", "p", "restart", NOW - timedelta(hours=2), o)
            for k, o in enumerate(outcomes)
        )
        result = decide({"a": fine()}, LedgerView(attempts=attempts), [prop("i0")], LOOSE, NOW)

        assert result.decisions[0].reason is Reason.POLICY_SUSPENDED
        assert result.suspend == frozenset({"p"})

    def test_resuming_a_policy_forgets_the_outcomes_before(self) -> None:
        attempts = tuple(
            Attempt("b", f"i{k}", "p", "restart", NOW - timedelta(hours=2), Outcome.NOT_HEALED)
            for k in range(5)
        )
        ledger = LedgerView(attempts=attempts, resumed_at={"p": NOW - timedelta(hours=1)})

        assert only_reason(fine(), prop("i0"), ledger=ledger) is None

    def test_cooldown(self) -> None:
        last = Attempt("a", "i0", "other", "restart", NOW - timedelta(minutes=10), Outcome.HEALED)
        ledger = LedgerView(attempts=(last,))

        assert (
            only_reason(fine(), prop("i0", instance_cooldown=timedelta(minutes=30)), ledger=ledger)
            is Reason.COOLDOWN
        )
        assert (
            only_reason(fine(), prop("i0", instance_cooldown=timedelta(minutes=10)), ledger=ledger)
            is None
        )

    def test_rate_limit_per_app_per_hour(self) -> None:
        attempts = tuple(
            Attempt("a", "i0", "p", "restart", NOW - timedelta(minutes=m), Outcome.HEALED)
            for m in (5, 25, 45, 65)
        )
        ledger = LedgerView(attempts=attempts)

        assert (
            only_reason(fine(), prop("i0", per_app_per_hour=3), ledger=ledger) is Reason.RATE_LIMIT
        )
        assert only_reason(fine(), prop("i0", per_app_per_hour=4), ledger=ledger) is None

    def test_a_limit_of_zero_never_acts(self) -> None:
        assert only_reason(fine(), prop("i0", per_app_per_hour=0)) is Reason.RATE_LIMIT

    def test_rate_limit_per_cycle(self) -> None:
        got = judge(fine(), [prop("i0", per_cycle=1), prop("i1", per_cycle=1)])

        assert got == [("i0", "approved", None), ("i1", "refused", "rate_limit")]

    def test_rate_limit_from_the_fleet_token_bucket(self) -> None:
        config = GuardConfig(max_in_flight=10, bucket={"rate_per_hour": 60, "burst": 5})
        # 0.5 tokens a minute ago, +1 since (60/h): 1.5 − 1 leaves 0.5, too few for the second.
        ledger = LedgerView(bucket=BucketState(tokens=0.5, updated_at=NOW - timedelta(minutes=1)))
        result = decide({"a": fine()}, ledger, [prop("i0"), prop("i1")], config, NOW)

        assert [d.reason for d in result.decisions] == [None, Reason.RATE_LIMIT]
        assert result.tokens_spent == 1
        assert result.bucket.tokens == pytest.approx(0.5)

    def test_max_in_flight_per_app(self) -> None:
        config = GuardConfig()
        got = judge(fine(), [prop("i0"), prop("i1")], config=config)

        assert got == [("i0", "approved", None), ("i1", "refused", "max_in_flight")]

    def test_max_in_flight_counts_the_ledger(self) -> None:
        rec = InFlight("a", "i3", "restart", "p", NOW, NOW + timedelta(minutes=10))
        ledger = LedgerView(in_flight=(rec,))

        assert (
            only_reason(fine(), prop("i0"), ledger=ledger, config=GuardConfig())
            is Reason.MAX_IN_FLIGHT
        )
        assert (
            only_reason(fine(), prop("i0", max_in_flight=2), ledger=ledger, config=GuardConfig())
            is None
        )

    def test_max_in_flight_fleet_wide(self) -> None:
        config = GuardConfig(max_in_flight=10, fleet_max_in_flight=1)
        a, b = fine(), app(healthy(5), ratio(5, 20), app_id="b")

        got = judge([a, b], [prop("i0", app_id="b"), prop("i1", app_id="a")], config=config)

        assert got == [("i0", "approved", None), ("i1", "refused", "max_in_flight")]

    def test_budget(self) -> None:
        snap = app(healthy(5), ratio(5, 100))

        assert only_reason(snap, prop("i0")) is Reason.BUDGET

    def test_every_reason_code_is_exercised_above(self) -> None:
        names = {n.removeprefix("test_") for n in dir(self) if n.startswith("test_")}

        missing = [r for r in Reason if not any(n.startswith(r.value) for n in names)]

        assert missing == []


# --- precedence -----------------------------------------------------------------------------------


class TestPrecedence:
    def test_the_order_is_the_one_in_design(self) -> None:
        assert [r.value for r in PRECEDENCE] == [
            "not_leader", "paused", "silenced", "stale_snapshot", "fleet_brake",
            "budget_unknown", "rollout", "short_circuit",
            "frozen", "disabled", "under_repair", "migrating", "in_flight",
            "shrink_mask", "extend_mask",
            "policy_suspended", "cooldown", "rate_limit", "max_in_flight",
            "budget",
        ]  # fmt: skip

    def test_not_leader_before_paused(self) -> None:
        ledger = LedgerView(leader=False, pauses=(Pause(who="a", why="b"),))

        assert only_reason(fine(), prop("i0"), ledger=ledger) is Reason.NOT_LEADER

    def test_paused_before_stale_snapshot(self) -> None:
        snap = app(healthy(5), ratio(5, 20), failed=("instance_info",))
        ledger = LedgerView(pauses=(Pause(who="a", why="b", app_id="a"),))

        assert only_reason(snap, prop("i0"), ledger=ledger) is Reason.PAUSED

    def test_stale_snapshot_before_fleet_brake(self) -> None:
        snap = app(healthy(5), ratio(5, 20), failed=("instance_status",))
        ledger = LedgerView(fleet_brake=BrakeState(engaged=True))

        assert only_reason(snap, prop("i0"), ledger=ledger) is Reason.STALE_SNAPSHOT

    def test_fleet_brake_before_budget_unknown(self) -> None:
        ledger = LedgerView(fleet_brake=BrakeState(engaged=True))

        assert only_reason(app(healthy(3)), prop("i0"), ledger=ledger) is Reason.FLEET_BRAKE

    def test_rollout_before_short_circuit(self) -> None:
        snap = fine(
            i0={"status": "UNKNOWN"},
            i1={"status": "UNKNOWN"},
            i2={"status": "UNKNOWN"},
            i3={"status": "NEW"},
        )

        assert only_reason(snap, prop("i0")) is Reason.ROLLOUT

    def test_short_circuit_before_frozen(self) -> None:
        snap = fine(
            i0={"status": "UNKNOWN", "frozen": True},
            i1={"status": "UNKNOWN"},
            i2={"status": "UNKNOWN"},
        )

        assert only_reason(snap, prop("i0")) is Reason.SHORT_CIRCUIT

    def test_frozen_before_disabled(self) -> None:
        assert only_reason(fine(i0={"frozen": True, "disabled": True}), prop("i0")) is Reason.FROZEN

    def test_migrating_before_in_flight(self) -> None:
        rec = InFlight("a", "i0", "migrate", "p", NOW, NOW + timedelta(minutes=10))
        snap = fine(i0={"migrating": True})

        assert (
            only_reason(snap, prop("i0"), ledger=LedgerView(in_flight=(rec,))) is Reason.MIGRATING
        )

    def test_in_flight_before_shrink_mask(self) -> None:
        rec = InFlight("a", "i0", "restart", "p", NOW, NOW + timedelta(minutes=10))
        snap = app(healthy(5), ratio(5, 20), meta={"shrink_mask": True})

        assert (
            only_reason(snap, prop("i0", Action.DELETE), ledger=LedgerView(in_flight=(rec,)))
            is Reason.IN_FLIGHT
        )

    def test_shrink_mask_before_policy_suspended(self) -> None:
        snap = app(healthy(5), ratio(5, 20), meta={"shrink_mask": True})
        ledger = LedgerView(suspended_policies=frozenset({"p"}))

        assert only_reason(snap, prop("i0", Action.DELETE), ledger=ledger) is Reason.SHRINK_MASK

    def test_cooldown_before_rate_limit(self) -> None:
        last = Attempt("a", "i0", "p", "restart", NOW - timedelta(minutes=1))
        p = prop("i0", instance_cooldown=timedelta(minutes=5), per_app_per_hour=1)

        assert only_reason(fine(), p, ledger=LedgerView(attempts=(last,))) is Reason.COOLDOWN

    def test_rate_limit_before_max_in_flight(self) -> None:
        rec = InFlight("a", "i3", "restart", "p", NOW, NOW + timedelta(minutes=10))
        last = Attempt("a", "i3", "p", "restart", NOW)
        ledger = LedgerView(in_flight=(rec,), attempts=(last,))

        got = only_reason(
            fine(), prop("i0", per_app_per_hour=1), ledger=ledger, config=GuardConfig()
        )

        assert got is Reason.RATE_LIMIT

    def test_max_in_flight_before_budget(self) -> None:
        rec = InFlight("a", "i3", "restart", "p", NOW, NOW + timedelta(minutes=10))
        snap = app(healthy(5), ratio(5, 100))

        assert (
            only_reason(snap, prop("i0"), ledger=LedgerView(in_flight=(rec,)), config=GuardConfig())
            is Reason.MAX_IN_FLIGHT
        )


# --- the sweep as a whole -------------------------------------------------------------------------


class TestSweep:
    def test_a_refused_proposal_does_not_take_the_shared_slot(self) -> None:
        # C7: A's migrate is refused budget without taking the fleet's single slot.
        config = GuardConfig(max_in_flight=10, fleet_max_in_flight=1)
        a = app({"i0": {"pass_agent_state": "DOWN"}, "i1": {}}, ratio(2, 100), app_id="A")
        b = app({"i0": {"status": "UNKNOWN"}, **healthy(4, "j")}, ratio(5, 60), app_id="B")
        proposals = [prop("i0", Action.MIGRATE, app_id="A", priority=9), prop("i0", app_id="B")]

        assert judge([a, b], proposals, config=config) == [
            ("i0", "refused", "budget"),
            ("i0", "approved", None),
        ]

    def test_dry_run_is_judged_but_spends_nothing(self) -> None:
        config = GuardConfig()
        snap = fine()
        proposals = [prop("i0", name="dry", dry_run=True, priority=100), prop("i1")]

        result = decide({"a": snap}, LedgerView(), proposals, config, NOW)

        assert [(d.outcome, d.reason) for d in result.decisions] == [
            (Verdict.DRY_RUN, Reason.MAX_IN_FLIGHT),
            (Verdict.APPROVED, None),
        ]
        assert result.tokens_spent == 1

    def test_results_keep_the_order_proposals_came_in(self) -> None:
        got = judge(fine(), [prop("i3"), prop("i1"), prop("i2")])

        assert [g[0] for g in got] == ["i3", "i1", "i2"]

    def test_short_circuited_and_stale_apps_are_reported(self) -> None:
        sick = fine(i0={"status": "UNKNOWN"}, i1={"status": "UNKNOWN"}, i2={"status": "UNKNOWN"})
        stale = app(healthy(2), ratio(2, 50), app_id="s", failed=("events",))

        result = decide(
            {"a": sick, "s": stale}, LedgerView(), [prop("i0"), prop("i0", app_id="s")], LOOSE, NOW
        )

        assert result.short_circuited == frozenset({"a"})
        assert result.stale == frozenset({"s"})

    def test_apps_are_reported_short_circuited_or_stale_without_proposals(self) -> None:
        sick = fine(i0={"status": "UNKNOWN"}, i1={"status": "UNKNOWN"}, i2={"status": "UNKNOWN"})
        stale = app(healthy(2), ratio(2, 50), app_id="s", failed=("events",))

        result = decide({"a": sick, "b": fine(), "s": stale}, LedgerView(), [], LOOSE, NOW)

        assert result.short_circuited == frozenset({"a"})
        assert result.stale == frozenset({"s"})


class TestFleetBrake:
    def fleet(self, sick: int, total: int) -> dict[str, AppSnapshot]:
        out = {}
        for k in range(total):
            inst = {"i0": {"status": "UNKNOWN"} if k < sick else {}, "i1": {}}
            out[f"app{k}"] = app(inst, ratio(2, 50), app_id=f"app{k}")
        return out

    def test_engages_above_the_share_with_enough_apps(self) -> None:
        # 5 of 20 = 25 % > 20 %, and 5 ≥ 5.
        assert sweep_health(self.fleet(5, 20), None, BrakeState(), GuardConfig()).engaged

    def test_needs_at_least_the_minimum_number_of_apps(self) -> None:
        # 4 of 10 = 40 %, but fewer than 5 apps.
        assert not sweep_health(self.fleet(4, 10), None, BrakeState(), GuardConfig()).engaged

    def test_exactly_the_share_is_not_above_it(self) -> None:
        assert not sweep_health(self.fleet(5, 25), None, BrakeState(), GuardConfig()).engaged

    def test_engages_on_the_api_error_rate(self) -> None:
        healthy_fleet = self.fleet(0, 10)

        assert sweep_health(healthy_fleet, 0.3, BrakeState(), GuardConfig(), api_calls=100).engaged
        assert not sweep_health(
            healthy_fleet, 0.3, BrakeState(), GuardConfig(), api_calls=5
        ).engaged
        assert not sweep_health(healthy_fleet, 0.25, BrakeState(), GuardConfig()).engaged

    def test_releases_only_after_the_configured_clear_sweeps(self) -> None:
        config = GuardConfig(clear_sweeps=3)
        state = sweep_health(self.fleet(6, 10), None, BrakeState(), config)
        seen = []
        for _ in range(3):
            state = sweep_health(self.fleet(0, 10), None, state, config)
            seen.append(state.engaged)

        assert seen == [True, True, False]

    def test_a_whole_sweep_judges_and_applies_the_brake_at_once(self) -> None:
        fleet = self.fleet(6, 10)
        p = prop("i1", app_id="app9")

        per_app = decide(fleet, LedgerView(), [p], LOOSE, NOW)
        whole = decide(fleet, LedgerView(), [p], LOOSE, NOW, whole_sweep=True)

        assert per_app.decisions[0].reason is None
        assert whole.decisions[0].reason is Reason.FLEET_BRAKE
        assert whole.brake.engaged


# --- configuration --------------------------------------------------------------------------------


class TestMaintenanceWindows:
    def test_a_daily_window_in_a_named_zone_ends_exclusive(self) -> None:
        w = MaintenanceWindow(timezone="Asia/Shanghai", start="20:00", end="21:00")

        assert w.active(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))  # 20:00 in Shanghai
        assert w.active(datetime(2026, 3, 2, 12, 59, tzinfo=UTC))
        assert not w.active(datetime(2026, 3, 2, 13, 0, tzinfo=UTC))

    def test_a_window_may_wrap_past_midnight_and_keeps_its_start_day(self) -> None:
        w = MaintenanceWindow(start="22:00", end="02:00", days=["sun"])

        assert w.active(datetime(2026, 3, 1, 23, 0, tzinfo=UTC))  # Sunday night
        assert w.active(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))  # Monday, started Sunday
        assert not w.active(datetime(2026, 3, 3, 1, 0, tzinfo=UTC))  # started Monday

    def test_a_one_off_window(self) -> None:
        w = MaintenanceWindow(start="2026-03-02T00:00", end="2026-03-03T00:00", timezone="UTC")

        assert w.active(NOW)
        assert not w.active(NOW + timedelta(days=1))

    @pytest.mark.parametrize(
        "kw",
        [
            {"start": "02:00", "end": "02:00"},
            {"start": "2026-03-02T00:00", "end": "2026-03-02T00:00"},
            {"start": "2026-03-03T00:00", "end": "2026-03-02T00:00"},
            {"start": "02:00", "end": "03:00", "timezone": "Mars/Olympus"},
            {"start": "02:00", "end": "03:00", "days": ["someday"]},
            {"start": "02:00", "end": "2026-03-02T00:00"},
        ],
    )
    def test_bad_windows_are_configuration_errors(self, kw: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            MaintenanceWindow(**kw)

    @pytest.mark.parametrize(
        "kw",
        [
            {"start": "02:00", "end": "02:00"},
            {"start": "02:00", "end": "02:00:00"},
            {"start": "2026-03-02T00:00", "end": "2026-03-02T00:00"},
            # The same instant in two notations is still an empty window.
            {"start": "2026-03-02T08:00+08:00", "end": "2026-03-02T00:00Z"},
        ],
    )
    def test_a_window_whose_start_equals_its_end_is_an_error_on_end(
        self, kw: dict[str, Any]
    ) -> None:
        with pytest.raises(ValidationError) as info:
            MaintenanceWindow(name="deploys", **kw)

        (error,) = info.value.errors()
        assert error["loc"] == ("end",)
        assert "'deploys': end equals start" in error["msg"]

    def test_selectors_match_like_policy_select(self) -> None:
        snap = app(healthy(1), ratio(1, 0), meta={"product": "search", "service_level": 2})

        assert Select(product=["sea*"], service_level=[1, 2]).matches("a", snap.meta)
        assert not Select(product=["sea*"], service_level=3).matches("a", snap.meta)
        assert not Select(exclude_app_ids=["a"]).matches("a", snap.meta)

    def test_unknown_keys_are_errors(self) -> None:
        with pytest.raises(ValidationError):
            GuardConfig.model_validate({"max_inflight": 3})

    def test_durations_read_as_policies_write_them(self) -> None:
        config = GuardConfig.model_validate({"probation": "1h30m", "instance_cooldown": "90s"})

        assert config.probation == timedelta(hours=1, minutes=30)
        assert config.instance_cooldown == timedelta(seconds=90)


# --- windows and silences select apps as policies do ------------------------------------------


#: (select, the app's meta overrides, app id, whether the app is selected), worked out by hand
#: from the policy language: every field given matches, no exclusion does, and a field the
#: app's meta lacks (missing or null) matches no glob, neither to select nor to exclude.
#: The default meta is product=product, module=module, cluster=cluster, service_level=1 and
#: no pass_type.
SELECTIONS: list[tuple[dict[str, Any], dict[str, Any], str, bool]] = [
    ({}, {}, "a", True),
    ({"product": "prod*"}, {}, "a", True),
    ({"product": "search"}, {}, "a", False),
    ({"service_level": [1, 2]}, {}, "a", True),
    ({"service_level": 2}, {}, "a", False),
    ({"pass_type": "*"}, {}, "a", False),
    ({"product": "*"}, {"product": None}, "a", False),
    ({"product": "*"}, {"product": ""}, "a", False),
    ({"exclude": {"pass_type": "*"}}, {}, "a", True),
    ({"exclude": {"cluster": "clu*"}}, {}, "a", False),
    ({"exclude": {"cluster": "bj"}}, {}, "a", True),
    ({"exclude_app_ids": ["a*"]}, {}, "app-1", False),
    ({"exclude_app_ids": "b*", "cluster": "cluster"}, {}, "a", True),
    ({"app_id": ["web-*", "a"]}, {}, "a", True),
    ({"app_id": "web-*"}, {}, "a", False),
    ({"module": "mod*", "exclude": {"app_id": "a"}}, {}, "a", False),
    ({"product": "Product"}, {}, "a", False),
]


def _policy_with(select: dict[str, Any]) -> Any:
    from healer.policy.model import Policy

    return Policy.model_validate(
        {"name": "p", "select": select, "when": {"status": ["UNKNOWN"]}, "action": "restart"}
    )


class TestWindowsAndSilencesSelectLikePolicies:
    @pytest.mark.parametrize(("select", "meta", "app_id", "expected"), SELECTIONS)
    def test_a_window_and_a_silence_silence_exactly_the_apps_a_policy_selects(
        self, select: dict[str, Any], meta: dict[str, Any], app_id: str, expected: bool
    ) -> None:
        from healer.policy.evaluate import selects

        snap = app(healthy(5), ratio(5, 20), app_id=app_id, meta=meta)
        window = MaintenanceWindow.model_validate(
            {"start": "11:00", "end": "13:00", "select": select}
        )
        config = GuardConfig(max_in_flight=10, maintenance_windows=[window])
        silence = Silence(select=Select.model_validate(select), start=NOW, end=NOW + timedelta(1))
        p = prop("i0", app_id=app_id)

        assert selects(_policy_with(select), snap.meta, app_id) is expected
        by_window = only_reason(snap, p, config=config) is Reason.SILENCED
        by_silence = only_reason(snap, p, ledger=LedgerView(silences=(silence,))) is Reason.SILENCED
        assert (by_window, by_silence) == (expected, expected)

    def test_the_old_app_ids_key_is_read_as_app_id(self) -> None:
        window = MaintenanceWindow.model_validate(
            {"start": "11:00", "end": "13:00", "select": {"app_ids": ["a*"], "app_id": "web-1"}}
        )

        assert window.select == Select(app_id=["web-1", "a*"])
        assert window.select.matches("a-7", None)
        assert not window.select.matches("b-7", None)

    @pytest.mark.parametrize(
        ("select", "key"),
        [
            ({"app_ids": []}, "app_ids"),
            ({"product": []}, "product"),
            ({"apps": ["a"]}, "apps"),
            ({"exclude": {"app_ids": ["a"]}}, "app_ids"),
        ],
    )
    def test_a_select_a_policy_would_refuse_is_an_error_naming_the_key(
        self, select: dict[str, Any], key: str
    ) -> None:
        with pytest.raises(ValidationError) as info:
            MaintenanceWindow.model_validate({"start": "11:00", "end": "13:00", "select": select})

        assert key in str(info.value)


# --- precedence, every pair at once ---------------------------------------------------------------


#: One way to make each reason apply to proposal ``i0`` of app ``a`` (five healthy instances,
#: ratio 20, a restart by policy ``p``): the keys it sets, by part of the scene. Each reason's
#: recipe alone is checked to give that reason; then every pair of recipes is applied together
#: and the reason earlier in DESIGN's order must win.
RECIPES: dict[Reason, dict[str, dict[str, Any]]] = {
    Reason.NOT_LEADER: {"ledger": {"leader": False}},
    Reason.PAUSED: {"ledger": {"pauses": (Pause(who="ann", why="incident"),)}},
    Reason.SILENCED: {
        "ledger": {"silences": (Silence(select=Select(), start=NOW, end=NOW + timedelta(1)),)}
    },
    Reason.STALE_SNAPSHOT: {"failed": {"calls": ("instance_info",)}},
    Reason.FLEET_BRAKE: {"ledger": {"fleet_brake": BrakeState(engaged=True)}},
    Reason.BUDGET_UNKNOWN: {"budget": {"type": "NoSuchBudget"}},
    Reason.ROLLOUT: {"instances": {"i5": {"status": "DEPLOYING"}}},
    Reason.SHORT_CIRCUIT: {
        "instances": {"i1": {"status": "UNKNOWN"}, "i2": {"status": "UNKNOWN"}, "i3": {}},
        "rules": {"max_unhealthy": Decimal("0.2")},
    },
    Reason.FROZEN: {"i0": {"frozen": True}},
    Reason.DISABLED: {"i0": {"disabled": True}},
    Reason.UNDER_REPAIR: {"i0": {"under_repair": True}},
    Reason.MIGRATING: {"i0": {"migrating": True}},
    Reason.IN_FLIGHT: {
        "ledger": {
            "in_flight": (InFlight("a", "i0", "restart", "q", NOW, NOW + timedelta(hours=1)),)
        }
    },
    Reason.SHRINK_MASK: {"meta": {"shrink_mask": True}, "config": {"restart": "shrink"}},
    Reason.EXTEND_MASK: {"meta": {"extend_mask": True}, "config": {"restart": "extend"}},
    Reason.POLICY_SUSPENDED: {"ledger": {"suspended_policies": frozenset({"p"})}},
    Reason.COOLDOWN: {
        "ledger": {
            "attempts": (
                Attempt("a", "i0", "q", "restart", NOW - timedelta(minutes=5), Outcome.HEALED),
            )
        },
        "rules": {"instance_cooldown": timedelta(hours=1)},
    },
    Reason.RATE_LIMIT: {"rules": {"per_cycle": 0}},
    Reason.MAX_IN_FLIGHT: {"rules": {"max_in_flight": 0}},
    Reason.BUDGET: {"budget": {"value": 100}},
}


def _merge(*recipes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """The recipes applied together, or None when two set the same key differently."""
    merged: dict[str, dict[str, Any]] = {}
    for recipe in recipes:
        for part, keys in recipe.items():
            into = merged.setdefault(part, {})
            for key, value in keys.items():
                if key in into and into[key] != value:
                    return None
                into[key] = value
    return merged


def _judge_scene(scene: dict[str, dict[str, Any]]) -> Reason | None:
    instances: dict[str, dict[str, Any]] = {**healthy(5), **scene.get("instances", {})}
    instances["i0"] = {**instances["i0"], **scene.get("i0", {})}
    budget = {"type": "MinAvailableRatio", "value": 20, **scene.get("budget", {})}
    meta = {"shrink_mask": False, "extend_mask": False, **scene.get("meta", {})}
    snap = app(
        instances,
        {"instanceControlBudget": budget, "replica": 5},
        failed=scene.get("failed", {}).get("calls", ()),
        meta=meta,
    )
    config = GuardConfig(max_in_flight=10, capacity_effects=scene.get("config", {}))
    ledger = LedgerView(**scene.get("ledger", {}))

    return only_reason(snap, prop("i0", **scene.get("rules", {})), ledger=ledger, config=config)


class TestEveryPairOfReasons:
    @pytest.mark.parametrize("reason", list(RECIPES), ids=lambda r: r.value)
    def test_each_recipe_alone_gives_its_reason(self, reason: Reason) -> None:
        assert _judge_scene(RECIPES[reason]) is reason

    def test_the_healthy_scene_is_approved(self) -> None:
        assert _judge_scene({}) is None

    def test_every_reason_has_a_recipe(self) -> None:
        assert set(RECIPES) == set(Reason)

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            (a, b)
            for k, a in enumerate(PRECEDENCE)
            for b in PRECEDENCE[k + 1 :]
            if _merge(RECIPES[a], RECIPES[b]) is not None
        ],
        ids=lambda r: r.value,
    )
    def test_the_earlier_reason_wins_when_both_apply(self, first: Reason, second: Reason) -> None:
        scene = _merge(RECIPES[first], RECIPES[second])
        assert scene is not None

        assert _judge_scene(scene) is first

    def test_only_pairs_that_cannot_be_built_together_are_left_out(self) -> None:
        clashing = {
            (a.value, b.value)
            for k, a in enumerate(PRECEDENCE)
            for b in PRECEDENCE[k + 1 :]
            if _merge(RECIPES[a], RECIPES[b]) is None
        }

        # An action shrinks or extends capacity, never both.
        assert clashing == {("shrink_mask", "extend_mask")}
