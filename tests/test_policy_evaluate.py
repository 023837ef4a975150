"""Evaluating policies against one app's snapshot: conditions, `for`, selection, escalation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from healer.cloudpilot.models import Action, AppMeta, Event, InstanceInfo, InstanceStatus
from healer.model import MatchedCondition
from healer.policy.evaluate import ConditionMemory, Evaluation, evaluate, selects
from healer.policy.loader import load_text
from healer.policy.model import Policy
from healer.snapshot import AppSnapshot, build_snapshot

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
HEALTHY: dict[str, Any] = {
    "proc_state": "RUNNING",
    "container_state": "RUNNING",
    "pass_agent_state": "RUNNING",
    "frozen": False,
    "bsn_disabled": False,
    "under_repair": False,
    "migrating": False,
}


def policy(text: str) -> Policy:
    result = load_text(text, "test.yaml")
    assert result.ok, [str(e) for e in result.errors]
    return result.policies[0]


def policies(text: str) -> list[Policy]:
    result = load_text(text, "test.yaml")
    assert result.ok, [str(e) for e in result.errors]
    return result.policies


def snapshot(
    instances: dict[str, dict[str, Any]],
    *,
    app_id: str = "web-1",
    meta: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    disabled: list[str] | None = None,
    missing: tuple[str, ...] = (),
    taken_at: datetime = T0,
) -> AppSnapshot:
    """An app whose instances are healthy and RUNNING unless their fields say otherwise."""
    states: dict[str, list[str]] = {}
    infos = []
    for iid, fields in instances.items():
        fields = dict(fields)
        states.setdefault(fields.pop("status", "RUNNING"), []).append(iid)
        infos.append(InstanceInfo(instance_id=iid, **{**HEALTHY, **fields}))
    status = InstanceStatus(
        app_id=app_id,
        total_num=len(instances),
        status_instance_top_five={
            s: {"value": len(ids), "top_five_list": ids} for s, ids in states.items()
        },
    )
    return build_snapshot(
        app_id,
        taken_at,
        meta=AppMeta(app_id=app_id, **(meta or {})),
        budget=None,
        status=None if "instance_status" in missing else status,
        infos=infos,
        disabled=None if "disabled" in missing else list(disabled or []),
        events=None if "events" in missing else [Event(**e) for e in events or []],
    )


def run(
    pols: list[Policy] | Policy,
    snap: AppSnapshot,
    memory: ConditionMemory | None = None,
    now: datetime = T0,
    **kwargs: Any,
) -> Evaluation:
    pols = [pols] if isinstance(pols, Policy) else pols
    return evaluate(pols, snap, memory or ConditionMemory(), now, **kwargs)


def targets(evaluation: Evaluation) -> list[tuple[str, str]]:
    return [(p.instance_id, p.action.value) for p in evaluation.proposals]


RESTART_UNKNOWN = "name: ru\nwhen: {status: [UNKNOWN]}\naction: restart\n"


class TestStateConditions:
    def test_an_instance_in_a_listed_state_is_proposed(self) -> None:
        snap = snapshot({"i0": {"status": "UNKNOWN"}, "i1": {}})

        assert targets(run(policy(RESTART_UNKNOWN), snap)) == [("i0", "restart")]

    def test_not_matches_every_other_state(self) -> None:
        pol = policy("name: p\nwhen: {status: {not: [RUNNING, STOP]}}\naction: start\n")
        snap = snapshot({"i0": {"status": "STOP"}, "i1": {}, "i2": {"status": "INVALID_STATE"}})

        assert targets(run(pol, snap)) == [("i2", "start")]

    def test_destroy_in_a_policy_means_the_api_spelling_destory(self) -> None:
        pol = policy("name: p\nwhen: {status: DESTROY}\naction: delete\n")
        snap = snapshot({"i0": {"status": "DESTORY"}})

        assert targets(run(pol, snap)) == [("i0", "delete")]

    def test_an_instance_with_an_unresolved_state_matches_no_state_condition(self) -> None:
        # Seven UNKNOWN instances but only five named: i5 and i6 could be anything.
        ids = [f"i{n}" for n in range(7)]
        status = InstanceStatus(
            total_num=7,
            status_instance_top_five={"UNKNOWN": {"value": 7, "top_five_list": ids[:5]}},
        )
        infos = [InstanceInfo(instance_id=i, **HEALTHY) for i in ids]
        snap = build_snapshot(
            "web-1",
            T0,
            meta=AppMeta(),
            budget=None,
            status=status,
            infos=infos,
            disabled=[],
            events=[],
        )
        is_unknown = policy(RESTART_UNKNOWN)
        not_running = policy("name: nr\nwhen: {status: {not: [RUNNING]}}\naction: restart\n")

        evaluation = run([is_unknown, not_running], snap)

        assert {p.instance_id for p in evaluation.proposals} == set(ids[:5])

    def test_no_state_condition_holds_when_instance_status_failed_to_load(self) -> None:
        snap = snapshot({"i0": {"status": "UNKNOWN"}}, missing=("instance_status",))

        assert run(policy(RESTART_UNKNOWN), snap).proposals == []


class TestFieldConditions:
    @pytest.mark.parametrize("field", ["proc_state", "container_state", "pass_agent_state"])
    def test_a_value_outside_not_is_proposed(self, field: str) -> None:
        pol = policy(f"name: p\nwhen: {{{field}: {{not: [RUNNING, OK]}}}}\naction: restart\n")
        snap = snapshot({"i0": {field: "DOWN"}, "i1": {field: "ok"}, "i2": {}})

        assert targets(run(pol, snap)) == [("i0", "restart")]

    @pytest.mark.parametrize("value", [None, "", "  "])
    def test_a_missing_or_null_field_never_matches_not(self, value: str | None) -> None:
        pol = policy("name: p\nwhen: {pass_agent_state: {not: [RUNNING]}}\naction: migrate\n")
        snap = snapshot({"i0": {"pass_agent_state": value}})

        assert run(pol, snap).proposals == []

    def test_listed_values_compare_without_case(self) -> None:
        pol = policy("name: p\nwhen: {container_state: [dead]}\naction: restart\n")
        snap = snapshot({"i0": {"container_state": "DEAD"}, "i1": {"container_state": "Dead "}})

        assert targets(run(pol, snap)) == [("i0", "restart"), ("i1", "restart")]

    def test_every_condition_of_a_policy_must_hold(self) -> None:
        pol = policy(
            "name: p\nwhen: {status: [RUNNING], proc_state: {not: [RUNNING]}}\naction: restart\n"
        )
        snap = snapshot(
            {"i0": {"proc_state": "DOWN"}, "i1": {"status": "STOP", "proc_state": "DOWN"}}
        )

        assert targets(run(pol, snap)) == [("i0", "restart")]


class TestFlagConditions:
    @pytest.mark.parametrize("flag", ["frozen", "under_repair", "migrating"])
    def test_a_flag_matches_its_value_and_null_matches_neither(self, flag: str) -> None:
        yes = policy(f"name: yes\nwhen: {{{flag}: true}}\naction: interrupt\n")
        no = policy(f"name: no\nwhen: {{{flag}: false}}\naction: interrupt\n")
        snap = snapshot({"i0": {flag: True}, "i1": {flag: False}, "i2": {flag: None}})

        evaluation = run([yes, no], snap)

        assert [(p.policy.name, p.instance_id) for p in evaluation.proposals] == [
            ("yes", "i0"),
            ("no", "i1"),
        ]

    def test_disabled_comes_from_the_disabled_list_or_bsn_disabled(self) -> None:
        pol = policy("name: p\nwhen: {disabled: true}\naction: enable\n")
        snap = snapshot({"i0": {}, "i1": {"bsn_disabled": True}, "i2": {}}, disabled=["i2"])

        assert targets(run(pol, snap)) == [("i1", "enable"), ("i2", "enable")]

    def test_disabled_holds_for_nobody_when_the_disabled_list_failed_to_load(self) -> None:
        yes = policy("name: yes\nwhen: {disabled: true}\naction: enable\n")
        no = policy("name: no\nwhen: {disabled: false}\naction: restart\n")
        snap = snapshot({"i0": {"bsn_disabled": True}, "i1": {}}, missing=("disabled",))

        assert run([yes, no], snap).proposals == []


class TestEventConditions:
    def test_a_firing_event_naming_the_instance_matches(self) -> None:
        pol = policy("name: p\nwhen: {event: proc_dead}\naction: restart\n")
        events = [
            {"name": "proc_dead", "instance_id": "i0"},
            {"name": "proc_dead", "instance_id": "i1", "status": "resolved"},
            {"name": "disk_full", "instance_id": "i2"},
        ]
        snap = snapshot({"i0": {}, "i1": {}, "i2": {}}, events=events)

        assert targets(run(pol, snap)) == [("i0", "restart")]

    def test_an_event_naming_only_an_address_matches_by_host_and_main_port(self) -> None:
        pol = policy("name: p\nwhen: {event: proc_dead}\naction: restart\n")
        events = [{"name": "proc_dead", "host_ip": "127.0.0.2", "port": 8080}]
        snap = snapshot(
            {
                "i0": {"host_ip": "127.0.0.2", "main_port": 8081},
                "i1": {"host_ip": "127.0.0.2", "main_port": 8080},
            },
            events=events,
        )

        assert targets(run(pol, snap)) == [("i1", "restart")]

    def test_a_level_condition_needs_a_listed_level(self) -> None:
        pol = policy(
            "name: p\nwhen: {event: {name: oom, level: [Critical, major]}}\naction: restart\n"
        )
        events = [
            {"name": "oom", "instance_id": "i0", "level": "CRITICAL"},
            {"name": "oom", "instance_id": "i1", "level": "minor"},
            {"name": "oom", "instance_id": "i2"},
        ]
        snap = snapshot({"i0": {}, "i1": {}, "i2": {}}, events=events)

        assert targets(run(pol, snap)) == [("i0", "restart")]

    def test_no_event_condition_holds_when_events_failed_to_load(self) -> None:
        pol = policy("name: p\nwhen: {event: proc_dead}\naction: restart\n")
        snap = snapshot({"i0": {}}, missing=("events",))

        assert run(pol, snap).proposals == []


class TestForAcrossObservations:
    POLICY = "name: p\nwhen: {status: [UNKNOWN], for: 1m}\naction: restart\n"

    def test_a_condition_must_hold_for_the_whole_duration(self) -> None:
        pol = policy(self.POLICY)
        down = snapshot({"i0": {"status": "UNKNOWN"}})

        first = run(pol, down, now=T0)
        second = run(pol, down, first.memory, now=T0 + timedelta(seconds=59))
        third = run(pol, down, second.memory, now=T0 + timedelta(seconds=60))

        assert first.proposals == [] and second.proposals == []
        assert third.proposals[0].matched == (
            MatchedCondition("status in [UNKNOWN]", timedelta(seconds=60)),
        )

    def test_the_clock_restarts_when_the_condition_stops_holding(self) -> None:
        pol = policy(self.POLICY)
        down = snapshot({"i0": {"status": "UNKNOWN"}})
        up = snapshot({"i0": {}})

        first = run(pol, down, now=T0)
        healed = run(pol, up, first.memory, now=T0 + timedelta(seconds=30))
        again = run(pol, down, healed.memory, now=T0 + timedelta(seconds=40))
        later = run(pol, down, again.memory, now=T0 + timedelta(seconds=90))

        assert len(healed.memory) == 0
        assert later.proposals == []
        assert later.memory.since("p", "web-1", "i0", "status in [UNKNOWN]") == T0 + timedelta(
            seconds=40
        )

    def test_several_conditions_hold_from_when_they_first_hold_together(self) -> None:
        pol = policy(
            "name: p\nwhen: {status: [RUNNING], proc_state: [DOWN], event: proc_dead, for: 1m}\n"
            "action: restart\n"
        )
        proc_down = snapshot({"i0": {"proc_state": "DOWN"}})
        with_event = snapshot(
            {"i0": {"proc_state": "DOWN"}}, events=[{"name": "proc_dead", "instance_id": "i0"}]
        )

        first = run(pol, proc_down, now=T0)
        second = run(pol, with_event, first.memory, now=T0 + timedelta(seconds=30))
        at_60 = run(pol, with_event, second.memory, now=T0 + timedelta(seconds=60))
        at_90 = run(pol, with_event, at_60.memory, now=T0 + timedelta(seconds=90))

        assert len(first.memory) == 0
        assert at_60.proposals == []
        assert at_90.proposals[0].matched == (
            MatchedCondition("status in [RUNNING]", timedelta(seconds=60)),
            MatchedCondition("proc_state in [DOWN]", timedelta(seconds=60)),
            MatchedCondition("event proc_dead", timedelta(seconds=60)),
        )
        assert dict(at_90.memory.entries()) == {
            (
                "p",
                "web-1",
                "i0",
                "status in [RUNNING] and proc_state in [DOWN] and event proc_dead",
            ): T0 + timedelta(seconds=30)
        }

    def test_healthy_instances_leave_nothing_in_memory(self) -> None:
        pol = policy(
            "name: p\nwhen: {status: [RUNNING], pass_agent_state: [DOWN], for: 1m}\n"
            "action: migrate\n"
        )

        evaluation = run(pol, snapshot({f"i{n}": {} for n in range(20)}))

        assert len(evaluation.memory) == 0

    def test_memory_of_other_apps_is_kept_and_a_disabled_policy_forgets(self) -> None:
        pol = policy(self.POLICY)
        memory = ConditionMemory.from_entries(
            {
                ("p", "other-app", "x0", "status in [UNKNOWN]"): T0,
                ("p", "web-1", "i0", "status in [UNKNOWN]"): T0,
            }
        )
        off = pol.model_copy(update={"enabled": False})

        evaluation = run(off, snapshot({"i0": {"status": "UNKNOWN"}}), memory)

        assert dict(evaluation.memory.entries()) == {
            ("p", "other-app", "x0", "status in [UNKNOWN]"): T0
        }

    def test_memory_survives_a_round_trip_through_json(self) -> None:
        pol = policy(self.POLICY)
        first = run(pol, snapshot({"i0": {"status": "UNKNOWN"}, "i1": {"status": "UNKNOWN"}}))

        again = ConditionMemory.from_json(first.memory.to_json())

        assert again == first.memory
        assert len(again) == 2


class TestSelection:
    def test_every_select_field_must_match_one_of_its_globs(self) -> None:
        pol = policy(
            "name: p\nselect: {product: [search, 'ads-*'], service_level: [1, 2]}\n"
            "when: {status: UNKNOWN}\naction: restart\n"
        )

        assert selects(pol, AppMeta(product="ads-web", service_level=2), "a")
        assert selects(pol, AppMeta(product="search", service_level="1"), "a")
        assert not selects(pol, AppMeta(product="search", service_level=3), "a")
        assert not selects(pol, AppMeta(product="maps", service_level=1), "a")

    def test_a_select_field_the_app_lacks_does_not_select_it(self) -> None:
        pol = policy(
            "name: p\nselect: {cluster: ['*']}\nwhen: {status: UNKNOWN}\naction: restart\n"
        )

        assert not selects(pol, AppMeta(cluster=None), "a")
        assert not selects(pol, None, "a")
        assert selects(pol, AppMeta(cluster="bj"), "a")

    def test_exclusions_remove_apps_that_match_any_of_their_fields(self) -> None:
        pol = policy(
            "name: p\nselect:\n  app_id: ['web-*', 'pay-*']\n"
            "  exclude: {module: [ledger]}\n  exclude_app_ids: ['pay-core-*']\n"
            "when: {status: UNKNOWN}\naction: restart\n"
        )

        assert selects(pol, AppMeta(module="front"), "web-1")
        assert selects(pol, AppMeta(module=None), "pay-edge-1")
        assert not selects(pol, AppMeta(module="ledger"), "pay-edge-1")
        assert not selects(pol, AppMeta(module="front"), "pay-core-7")
        assert not selects(pol, AppMeta(module="front"), "db-1")

    def test_an_unselected_app_gets_no_proposals(self) -> None:
        pol = policy(
            "name: p\nselect: {app_id: 'db-*'}\nwhen: {status: UNKNOWN}\naction: restart\n"
        )

        assert run(pol, snapshot({"i0": {"status": "UNKNOWN"}})).proposals == []

    def test_no_select_means_every_app(self) -> None:
        assert selects(policy(RESTART_UNKNOWN), None, "anything")


class TestProposals:
    def test_proposals_go_by_priority_then_instance_id(self) -> None:
        pols = policies(
            "name: low\npriority: 1\nwhen: {status: UNKNOWN}\naction: restart\n---\n"
            "name: high\npriority: 9\nwhen: {pass_agent_state: [DOWN]}\naction: migrate\n"
        )
        snap = snapshot(
            {
                "i2": {"status": "UNKNOWN"},
                "i1": {"status": "UNKNOWN"},
                "i3": {"pass_agent_state": "DOWN"},
                "i0": {"pass_agent_state": "DOWN"},
            }
        )

        assert targets(run(pols, snap)) == [
            ("i0", "migrate"),
            ("i3", "migrate"),
            ("i1", "restart"),
            ("i2", "restart"),
        ]

    def test_a_disabled_policy_proposes_nothing(self) -> None:
        pol = policy("name: p\nenabled: false\nwhen: {status: UNKNOWN}\naction: restart\n")

        assert run(pol, snapshot({"i0": {"status": "UNKNOWN"}})).proposals == []

    def test_a_dry_run_policy_proposes_with_dry_run_rules(self) -> None:
        pol = policy("name: p\ndry_run: true\nwhen: {status: UNKNOWN}\naction: restart\n")

        [proposal] = run(pol, snapshot({"i0": {"status": "UNKNOWN"}})).proposals

        assert proposal.policy.dry_run is True

    def test_action_params_travel_on_the_proposal(self) -> None:
        pol = policy(
            "name: p\nwhen: {status: UNKNOWN}\naction: {type: migrate, params: {reason: x}}\n"
        )

        [proposal] = run(pol, snapshot({"i0": {"status": "UNKNOWN"}})).proposals

        assert (proposal.action, proposal.params) == (Action.MIGRATE, {"reason": "x"})


class TestEscalation:
    POLICY = (
        "name: p\nwhen: {status: UNKNOWN}\naction: restart\n"
        "escalate: {after: 2, within: 30m, to: migrate}\n"
    )

    def test_enough_unhealed_attempts_switch_to_the_escalation_action(self) -> None:
        asked = []

        def attempts(policy: str, app: str, instance: str, within: timedelta) -> int:
            asked.append((policy, app, instance, within))
            return 2

        [proposal] = run(
            policy(self.POLICY), snapshot({"i0": {"status": "UNKNOWN"}}), attempts=attempts
        ).proposals

        assert proposal.action is Action.MIGRATE
        assert proposal.params == {"escalated_from": "restart", "attempts": 2}
        assert asked == [("p", "web-1", "i0", timedelta(minutes=30))]

    def test_fewer_attempts_keep_the_policy_action(self) -> None:
        [proposal] = run(
            policy(self.POLICY),
            snapshot({"i0": {"status": "UNKNOWN"}}),
            attempts={("p", "web-1", "i0"): 1},
        ).proposals

        assert (proposal.action, proposal.params) == (Action.RESTART, {})


class TestRules:
    @pytest.mark.parametrize(
        ("written", "share"), [("50%", 0.5), ("0.5", 0.5), ("12.5%", 0.125), ("0", 0.0), ("1", 1.0)]
    )
    def test_max_unhealthy_is_a_share(self, written: str, share: float) -> None:
        pol = policy(f"{RESTART_UNKNOWN}max_unhealthy: {written}\n")

        assert pol.rules().max_unhealthy == share

    def test_rules_carry_every_limit_of_the_policy(self) -> None:
        pol = policy(
            "name: p\npriority: 7\ndry_run: true\nwhen: {status: UNKNOWN}\naction: restart\n"
            "limits: {per_cycle: 1, per_app_per_hour: 0, instance_cooldown: 1h30m}\n"
            "verify: {timeout: 5m, healthy_for: 30s}\nescalate: {after: 3, to: migrate}\n"
            "max_in_flight: 2\n"
        )

        rules = pol.rules()

        assert (rules.name, rules.priority, rules.dry_run) == ("p", 7, True)
        assert (rules.per_cycle, rules.per_app_per_hour) == (1, 0)
        assert rules.instance_cooldown == timedelta(hours=1, minutes=30)
        assert (rules.verify_timeout, rules.healthy_for) == (
            timedelta(minutes=5),
            timedelta(seconds=30),
        )
        assert (rules.escalate_after, rules.escalate_within, rules.escalate_to) == (
            3,
            timedelta(hours=1),
            Action.MIGRATE,
        )
        assert (rules.max_in_flight, rules.max_unhealthy) == (2, None)

    def test_unset_limits_are_left_to_the_guard(self) -> None:
        rules = policy(RESTART_UNKNOWN).rules()

        assert (rules.per_cycle, rules.per_app_per_hour, rules.instance_cooldown) == (
            None,
            None,
            None,
        )
        assert rules.verify_timeout == timedelta(minutes=10)
