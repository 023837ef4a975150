"""The simulator's fleet: generation, scenarios, the budget arithmetic and the fault schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from healer.simulator import ManualClock, Simulator
from healer.simulator.fleet import required_for
from healer.simulator.scenario import ScenarioError

# --------------------------------------------------------------- same seed, same fleet


def _fleet_view(sim: Simulator) -> list[dict]:
    return [sim.describe(a) | sim.instance_info(a) | sim.min_usable(a) for a in sim.app_ids]


def test_the_same_seed_generates_the_same_fleet() -> None:
    a = Simulator.generate(apps=30, seed=11, clock=ManualClock())
    b = Simulator.generate(apps=30, seed=11, clock=ManualClock())

    assert _fleet_view(a) == _fleet_view(b)


def test_a_different_seed_generates_a_different_fleet() -> None:
    a = Simulator.generate(apps=30, seed=11, clock=ManualClock())
    b = Simulator.generate(apps=30, seed=12, clock=ManualClock())

    assert _fleet_view(a) != _fleet_view(b)


def test_the_same_seed_schedules_the_same_faults() -> None:
    sims = [
        Simulator.generate(apps=20, seed=5, fault_rate=0.5, clock=ManualClock()) for _ in range(2)
    ]
    for sim in sims:
        sim.advance(300)

    reports = [s.report()["faults_injected"] for s in sims]
    assert reports[0] == reports[1]
    assert reports[0]["total"] > 0
    assert _fleet_view(sims[0]) == _fleet_view(sims[1])


def _faulted(sim: Simulator) -> set[str]:
    return {i for a in sim.apps.values() for i, inst in a.instances.items() if inst.faulted}


def _busy(sim: Simulator) -> set[str]:
    return {i for a in sim.apps.values() for i, inst in a.instances.items() if inst.op}


def test_a_healers_actions_do_not_move_the_later_faults_of_a_seed() -> None:
    # Two runs of one seed; in the second, a healer restarts a third of every app at the
    # start. A fault may only differ between the runs where its target was busy or faulted
    # already in one of them (it is skipped there); every other fault hits the same instance
    # at the same moment in both.
    quiet, acted = (
        Simulator.generate(apps=6, seed=9, fault_rate=4.0, clock=ManualClock()) for _ in range(2)
    )
    for app_id in acted.app_ids:
        ids = sorted(acted.apps[app_id].instances)
        acted.act("restart", app_id, ids[::3])

    seen_quiet, seen_acted = _faulted(quiet), _faulted(acted)
    drawn_in_both = 0
    for _ in range(120):
        busy_acted = _busy(acted)
        quiet.advance(1)
        acted.advance(1)
        now_quiet, now_acted = _faulted(quiet), _faulted(acted)
        new_quiet, new_acted = now_quiet - seen_quiet, now_acted - seen_acted

        assert new_acted <= new_quiet | seen_quiet
        assert new_quiet <= new_acted | seen_acted | busy_acted
        drawn_in_both += len(new_quiet & new_acted)
        seen_quiet, seen_acted = now_quiet, now_acted

    skipped = [s.report()["faults_skipped"]["total"] for s in (quiet, acted)]
    injected = [s.report()["faults_injected"]["total"] for s in (quiet, acted)]
    assert injected[0] + skipped[0] == injected[1] + skipped[1]
    assert drawn_in_both >= 10


def test_no_fault_is_scheduled_at_rate_zero() -> None:
    sim = Simulator.generate(apps=20, seed=5, fault_rate=0.0, clock=ManualClock())

    sim.advance(3600)

    assert sim.report()["faults_injected"]["total"] == 0


# ------------------------------------------------------------- a fleet like a real one


@pytest.fixture(scope="module")
def big() -> Simulator:
    return Simulator.generate(apps=400, seed=3, clock=ManualClock())


def test_generated_ids_follow_the_app_and_instance_pattern(big: Simulator) -> None:
    assert big.app_ids[:2] == ["app-0001", "app-0002"]
    assert next(iter(big.apps["app-0001"].instances)) == "app-0001.0"


def test_generated_apps_vary_in_product_module_cluster_and_service_level(big: Simulator) -> None:
    metas = [a.meta for a in big.apps.values()]

    for key in ("product", "module", "cluster", "service_level"):
        assert len({m[key] for m in metas}) >= 3, key
    assert any(m["extend_mask"] for m in metas)
    assert any(m["shrink_mask"] for m in metas)
    assert not all(m["shrink_mask"] for m in metas)


def test_generated_replicas_span_one_to_fifty(big: Simulator) -> None:
    sizes = [len(a.instances) for a in big.apps.values()]

    assert min(sizes) == 1
    assert 40 <= max(sizes) <= 50


def test_generated_budgets_use_every_documented_form(big: Simulator) -> None:
    budgets = [a.budget for a in big.apps.values()]
    present = [b for b in budgets if b is not None]
    ratios = [b["instanceControlBudget"]["value"] for b in present if "instanceControlBudget" in b]
    usable = [b["minUsable"] for b in present if "minUsable" in b]

    assert ratios and all(50 <= r <= 100 for r in ratios)
    assert any(0 < u <= 1 for u in usable), "minUsable as a fraction"
    assert any(u > 1 for u in usable), "minUsable as a percent"
    assert any("replica_that_at_least_need_to_keep" in b for b in present)
    assert any("replica_that_at_least_need_to_keep" not in b for b in present)
    assert any("instanceControlBudget" not in b for b in present)
    assert any(b is None for b in budgets), "an app with no min_usable_info"


def test_a_few_generated_instances_are_frozen_disabled_under_repair_or_migrating(
    big: Simulator,
) -> None:
    insts = [i for a in big.apps.values() for i in a.instances.values()]

    assert any(i.frozen for i in insts)
    assert any(a.disabled for a in big.apps.values())
    assert any(i.under_repair for i in insts)
    assert any(i.migrating for i in insts)
    assert sum(i.frozen for i in insts) < len(insts) * 0.05


def test_generated_hosts_are_documentation_addresses_only(big: Simulator) -> None:
    hosts = {i.host_ip for a in big.apps.values() for i in a.instances.values()}

    assert all(h.startswith(("192.0.2.", "198.51.100.", "203.0.113.")) for h in hosts)


# ------------------------------------------------------------------ the arithmetic


@pytest.mark.parametrize(
    ("budget", "r", "required"),
    [
        # 80 % of 7 is 5.6: six must stay.
        ({"instanceControlBudget": {"type": "MinAvailableRatio", "value": 80}}, 7, 6),
        # 14 % of 50 is exactly 7 (floating point would say 7.000000000000001 → 8).
        ({"minUsable": 14}, 50, 7),
        ({"minUsable": 0.14}, 50, 7),
        # The floor wins over a smaller ratio.
        (
            {
                "instanceControlBudget": {"type": "MinAvailableRatio", "value": 50},
                "replica_that_at_least_need_to_keep": 8,
            },
            10,
            8,
        ),
        # minUsable 0 contributes nothing.
        (
            {"minUsable": 0, "instanceControlBudget": {"type": "MinAvailableRatio", "value": 60}},
            5,
            3,
        ),
        # Unknown, out of range, or missing: every instance is required.
        ({"instanceControlBudget": {"type": "MaxUnavailable", "value": 1}}, 9, 9),
        ({"instanceControlBudget": {"type": "MinAvailableRatio", "value": 120}}, 9, 9),
        ({"minUsable": -1}, 9, 9),
        ({"replica_that_at_least_need_to_keep": -2}, 9, 9),
        (None, 9, 9),
        # The JSON text read exactly: 70.5 % of 13 is 9.165 → 10.
        ({"instanceControlBudget": {"type": "MinAvailableRatio", "value": "70.5"}}, 13, 10),
    ],
)
def test_required_follows_the_design_arithmetic(budget: dict | None, r: int, required: int) -> None:
    assert required_for(budget, r) == required


# ---------------------------------------------------------------------- scenarios


def test_a_scenario_defines_apps_instances_and_budgets(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        """
apps:
  web-1:
    meta: {product: search, cluster: bj-01}
    budget: {instanceControlBudget: {type: MinAvailableRatio, value: 80}, replica: 7}
    disabled: [web-1.5]
    instances:
      web-1.0: {}
      web-1.1: {status: UNKNOWN}
      web-1.2: {pass_agent_state: DOWN}
      web-1.3: {}
      web-1.4: {}
      web-1.5: {}
      web-1.6: {frozen: true}
  api-1:
    replicas: 3
    budget: null
faults:
  - {at: 30s, kind: process_down, app_id: api-1, instance_id: api-1.2}
"""
    )
    sim = Simulator.from_scenario(path, clock=ManualClock())

    assert sim.app_ids == ["web-1", "api-1"]
    assert sim.app_meta("web-1")["app_meta"]["product"] == "search"
    # RUNNING and serving: .0, .2 (an agent fault alone keeps serving), .3, .4, .6 (frozen).
    assert sim.available("web-1") == 5
    assert sim.required("web-1") == 6
    assert sim.required("api-1") == 3
    assert list(sim.apps["api-1"].instances) == ["api-1.0", "api-1.1", "api-1.2"]

    sim.advance(29)
    assert sim.instance("api-1", "api-1.2").proc_state == "RUNNING"
    sim.advance(1)
    assert sim.instance("api-1", "api-1.2").proc_state == "DEAD"


def test_a_scenario_with_an_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apps:\n  web-1:\n    instances:\n      web-1.0: {staus: UNKNOWN}\n")

    with pytest.raises(ScenarioError, match=r"bad\.yaml.*web-1\.0.*staus"):
        Simulator.from_scenario(path)


def test_scheduled_faults_raise_events_some_named_only_by_address() -> None:
    sim = Simulator.generate(apps=20, seed=5, fault_rate=1.0, clock=ManualClock())
    sim.advance(600)

    events = [e for a in sim.app_ids for e in sim.events(a)["events"]]
    by_address = [e for e in events if "instance_id" not in e]

    assert events
    assert by_address
    for e in by_address:
        found = sim.instance_by_addr(e["host_ip"], e["port"])["instance_id"]
        assert found is not None and found.startswith(e["app_id"] + ".")


def test_a_state_the_api_never_documented_is_served_as_itself(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text("apps:\n  a-1:\n    instances:\n      a-1.0: {status: HIBERNATING}\n")

    sim = Simulator.from_scenario(path, clock=ManualClock())

    bucket = sim.instance_status("a-1")["status_instance_top_five"]["HIBERNATING"]
    assert bucket == {"value": 1, "top_five_list": ["a-1.0"]}
