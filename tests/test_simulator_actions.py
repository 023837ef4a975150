"""Each action's transitions over time, and the auditor, driven by raw HTTP over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healer.simulator import ManualClock, Simulator, serve

SCENARIO = """
seed: 4
settings: {replace_deleted: false}
apps:
  web-1:
    budget: {instanceControlBudget: {type: MinAvailableRatio, value: 80}, replica: 7}
    instances:
      web-1.0: {}
      web-1.1: {}
      web-1.2: {}
      web-1.3: {}
      web-1.4: {}
      web-1.5: {}
      web-1.6: {}
  odd-1:
    budget: {replica_that_at_least_need_to_keep: 0, replica: 6}
    disabled: [odd-1.1]
    instances:
      odd-1.0: {frozen: true}
      odd-1.1: {}
      odd-1.2: {under_repair: true}
      odd-1.3: {migrating: true}
      odd-1.4: {status: UNKNOWN}
      odd-1.5: {}
  small-1:
    budget: {instanceControlBudget: {type: MinAvailableRatio, value: 60}, replica: 3}
    instances:
      small-1.0: {status: UNKNOWN}
      small-1.1: {}
      small-1.2: {}
"""


class Fleet:
    """A served scenario with a manual clock and a raw HTTP client."""

    def __init__(self, sim: Simulator, clock: ManualClock, http: httpx.AsyncClient) -> None:
        self.sim = sim
        self.clock = clock
        self.http = http

    async def act(self, action: str, app_id: str, *ids: str, replica: str | None = None) -> Any:
        headers = {"X-Healer-Replica": replica} if replica else {}
        body = {"app_id": app_id, "instance_ids": list(ids)}
        r = await self.http.post(f"/feiyun/action/instance/{action}", json=body, headers=headers)
        r.raise_for_status()
        return r.json()

    async def info(self, app_id: str, iid: str) -> dict[str, Any] | None:
        r = await self.http.get("/paas/instance/getinfo", params={"app_id": app_id})
        return next((i for i in r.json()["instance_info_list"] if i["instance_id"] == iid), None)

    async def state(self, app_id: str, iid: str) -> str | None:
        r = await self.http.get("/feiyun/get/instance", params={"app_id": app_id})
        for state, bucket in r.json()["status_instance_top_five"].items():
            if iid in bucket["top_five_list"]:
                return str(state)
        return None

    async def report(self) -> dict[str, Any]:
        return (await self.http.get("/sim/report")).json()

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)


async def _fleet(tmp_path: Path, text: str, **options: Any) -> AsyncIterator[Fleet]:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    clock = ManualClock()
    sim = Simulator.from_scenario(path, clock=clock, **options)
    async with serve(sim) as running, httpx.AsyncClient(base_url=running.base_url) as http:
        yield Fleet(sim, clock, http)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async for f in _fleet(tmp_path, SCENARIO):
        yield f


# ---------------------------------------------------------------------- transitions


async def test_restart_goes_through_restarting_back_to_running(fleet: Fleet) -> None:
    answer = await fleet.act("restart", "web-1", "web-1.0")

    assert answer == {"success_instances": ["web-1.0"], "failed_instances": []}
    assert await fleet.state("web-1", "web-1.0") == "RESTARTING"
    fleet.later(2.9)
    assert await fleet.state("web-1", "web-1.0") == "RESTARTING"
    fleet.later(0.1)
    assert await fleet.state("web-1", "web-1.0") == "RUNNING"


async def test_a_restart_that_fails_ends_in_unknown(tmp_path: Path) -> None:
    async for f in _fleet(tmp_path, SCENARIO, restart_fail_prob=1.0):
        await f.act("restart", "web-1", "web-1.0")
        f.later(3)

        assert await f.state("web-1", "web-1.0") == "UNKNOWN"


async def test_speed_divides_every_duration(tmp_path: Path) -> None:
    async for f in _fleet(tmp_path, SCENARIO, speed=2.0):
        await f.act("restart", "web-1", "web-1.0")
        f.later(1.5)

        assert await f.state("web-1", "web-1.0") == "RUNNING"


async def test_migrate_sets_migrating_then_moves_the_instance_to_a_new_healthy_host(
    fleet: Fleet,
) -> None:
    await fleet.http.post(
        "/sim/faults", json={"kind": "agent_down", "app_id": "web-1", "instance_id": "web-1.2"}
    )
    old = await fleet.info("web-1", "web-1.2")
    await fleet.act("migrate", "web-1", "web-1.2")

    assert (await fleet.info("web-1", "web-1.2"))["migrating"] is True
    fleet.later(8)
    new = await fleet.info("web-1", "web-1.2")
    assert new["migrating"] is False
    assert new["pass_agent_state"] == "RUNNING"
    old_lookup = await fleet.http.get(
        "/shell/get/instance", params={"host_ip": old["host_ip"], "port": old["main_port"]}
    )
    assert new["host_ip"] != old["host_ip"]
    assert old_lookup.json() == {"instance_id": None}
    lookup = await fleet.http.get(
        "/shell/get/instance", params={"host_ip": new["host_ip"], "port": new["main_port"]}
    )
    assert lookup.json() == {"instance_id": "web-1.2"}
    assert (await fleet.report())["instances_healed"] == 1


async def test_delete_marks_destory_then_the_instance_is_gone(fleet: Fleet) -> None:
    await fleet.act("delete", "web-1", "web-1.6")

    assert await fleet.state("web-1", "web-1.6") == "DESTORY"
    fleet.later(2)
    assert await fleet.info("web-1", "web-1.6") is None
    r = await fleet.http.get("/feiyun/get/instance", params={"app_id": "web-1"})
    assert r.json()["total_num"] == 6


async def test_a_deleted_instance_is_replaced_by_a_new_one_that_deploys(tmp_path: Path) -> None:
    async for f in _fleet(tmp_path, SCENARIO, replace_deleted=True):
        await f.act("delete", "web-1", "web-1.6")
        f.later(2)

        assert await f.info("web-1", "web-1.6") is None
        assert await f.state("web-1", "web-1.7") == "DEPLOYING"
        f.later(5)
        assert (await f.info("web-1", "web-1.7")) is not None
        assert f.sim.state_of("web-1", "web-1.7") == "RUNNING"


async def test_stop_then_start(fleet: Fleet) -> None:
    await fleet.act("stop", "web-1", "web-1.3")
    assert await fleet.state("web-1", "web-1.3") == "STOPPING"
    fleet.later(2)
    assert await fleet.state("web-1", "web-1.3") == "STOP"

    await fleet.act("start", "web-1", "web-1.3")
    fleet.later(2)
    assert await fleet.state("web-1", "web-1.3") == "RUNNING"


async def test_disable_and_enable_move_the_instance_in_and_out_of_the_disabled_list(
    fleet: Fleet,
) -> None:
    await fleet.act("disable", "web-1", "web-1.4")
    r = await fleet.http.get("/feiyun/get/disabled", params={"app_id": "web-1"})
    assert r.json() == {"disabled_instance_id_list": ["web-1.4"]}
    assert (await fleet.info("web-1", "web-1.4"))["bsn_disabled"] is True

    await fleet.act("enable", "web-1", "web-1.4")
    r = await fleet.http.get("/feiyun/get/disabled", params={"app_id": "web-1"})
    assert r.json() == {"disabled_instance_id_list": []}


async def test_repair_sets_under_repair_then_leaves_the_instance_healthy(fleet: Fleet) -> None:
    await fleet.act("repair", "small-1", "small-1.0")
    assert (await fleet.info("small-1", "small-1.0"))["under_repair"] is True

    fleet.later(10)
    info = await fleet.info("small-1", "small-1.0")
    assert info["under_repair"] is False
    assert await fleet.state("small-1", "small-1.0") == "RUNNING"
    # It started UNKNOWN in the scenario, so it counts as healed.
    assert (await fleet.report())["instances_healed"] == 1


async def test_unfreeze_clears_frozen(fleet: Fleet) -> None:
    answer = await fleet.act("unfreeze", "odd-1", "odd-1.0")

    assert answer["success_instances"] == ["odd-1.0"]
    assert (await fleet.info("odd-1", "odd-1.0"))["frozen"] is False


async def test_interrupt_cancels_the_running_operation_and_restores_the_instance(
    fleet: Fleet,
) -> None:
    await fleet.act("restart", "small-1", "small-1.0")
    assert await fleet.state("small-1", "small-1.0") == "RESTARTING"

    await fleet.act("interrupt", "small-1", "small-1.0")
    assert await fleet.state("small-1", "small-1.0") == "UNKNOWN"
    fleet.later(10)
    assert await fleet.state("small-1", "small-1.0") == "UNKNOWN"


async def test_interrupt_cancels_a_delete_still_running(fleet: Fleet) -> None:
    await fleet.act("delete", "web-1", "web-1.2")
    assert await fleet.state("web-1", "web-1.2") == "DESTORY"

    answer = await fleet.act("interrupt", "web-1", "web-1.2")
    fleet.later(60)

    assert answer["success_instances"] == ["web-1.2"]
    assert await fleet.state("web-1", "web-1.2") == "RUNNING"


async def test_interrupt_with_nothing_running_fails(fleet: Fleet) -> None:
    answer = await fleet.act("interrupt", "web-1", "web-1.0")

    assert answer == {"success_instances": [], "failed_instances": ["web-1.0"]}


async def test_an_unknown_instance_fails_and_an_unknown_app_is_not_found(fleet: Fleet) -> None:
    answer = await fleet.act("restart", "web-1", "web-1.0", "web-1.99")
    missing = await fleet.http.post(
        "/feiyun/action/instance/restart", json={"app_id": "nope", "instance_ids": ["nope.0"]}
    )

    assert answer == {"success_instances": ["web-1.0"], "failed_instances": ["web-1.99"]}
    assert missing.status_code == 404


async def test_a_restart_does_not_heal_an_agent_fault(fleet: Fleet) -> None:
    await fleet.http.post(
        "/sim/faults", json={"kind": "agent_down", "app_id": "web-1", "instance_id": "web-1.1"}
    )
    await fleet.act("restart", "web-1", "web-1.1")
    fleet.later(3)

    assert (await fleet.info("web-1", "web-1.1"))["pass_agent_state"] == "DOWN"
    assert (await fleet.report())["instances_healed"] == 0


# -------------------------------------------------------------------------- auditor


def _kinds(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(u["kind"], u["action"], u["instance_id"]) for u in report["unsafe_actions"]]


async def test_taking_an_app_below_required_is_flagged_with_its_arithmetic(fleet: Fleet) -> None:
    # replica 7, ratio 80: 5.6 → 6 required. One restart leaves 6; a second leaves 5.
    await fleet.act("restart", "web-1", "web-1.0", "web-1.1")

    report = await fleet.report()
    assert _kinds(report) == [("below_required", "restart", "web-1.1")]
    entry = report["unsafe_actions"][0]
    assert entry["required"] == 6
    assert entry["available_before"] == 6
    assert entry["available_after"] == 5
    assert entry["replica_count"] == 7
    assert report["unsafe_count"] == 1


async def test_spending_the_budget_across_two_calls_is_flagged_too(fleet: Fleet) -> None:
    await fleet.act("migrate", "web-1", "web-1.0")
    await fleet.act("disable", "web-1", "web-1.1")

    assert _kinds(await fleet.report()) == [("below_required", "disable", "web-1.1")]


@pytest.mark.parametrize(
    ("action", "iid", "kind"),
    [
        ("restart", "odd-1.0", "frozen"),
        ("migrate", "odd-1.1", "disabled"),
        ("restart", "odd-1.2", "under_repair"),
        ("interrupt", "odd-1.3", "migrating"),
    ],
)
async def test_touching_an_instance_that_must_be_left_alone_is_flagged(
    fleet: Fleet, action: str, iid: str, kind: str
) -> None:
    await fleet.act(action, "odd-1", iid)

    assert _kinds(await fleet.report()) == [(kind, action, iid)]


async def test_a_second_disruptive_action_while_the_first_runs_is_flagged(fleet: Fleet) -> None:
    await fleet.act("restart", "small-1", "small-1.0", replica="healer-a")
    await fleet.act("restart", "small-1", "small-1.0", replica="healer-b")

    report = await fleet.report()
    assert _kinds(report) == [("in_flight", "restart", "small-1.0")]
    assert report["unsafe_actions"][0]["replica"] == "healer-b"
    assert report["unsafe_actions"][0]["previous_action"] == "restart"


async def test_an_action_from_a_replica_that_is_not_the_leader_is_flagged(fleet: Fleet) -> None:
    await fleet.http.put("/sim/leader", json={"replica": "healer-a"})

    await fleet.act("restart", "small-1", "small-1.0", replica="healer-a")
    await fleet.act("restart", "web-1", "web-1.0", replica="healer-b")

    report = await fleet.report()
    assert _kinds(report) == [("not_leader", "restart", "web-1.0")]
    assert report["unsafe_actions"][0]["leader"] == "healer-a"


async def test_a_second_action_after_the_first_finished_is_not_flagged(fleet: Fleet) -> None:
    await fleet.act("restart", "small-1", "small-1.0")
    fleet.later(3)
    await fleet.act("restart", "small-1", "small-1.0")

    assert (await fleet.report())["unsafe_count"] == 0


async def test_safe_actions_are_never_flagged(fleet: Fleet) -> None:
    # small-1: replica 3, ratio 60 → 2 required; .0 is down, so restarting it costs nothing.
    await fleet.act("restart", "small-1", "small-1.0", replica="healer-a")
    # The only actions a frozen or disabled instance allows.
    await fleet.act("unfreeze", "odd-1", "odd-1.0", replica="healer-a")
    await fleet.act("enable", "odd-1", "odd-1.1", replica="healer-a")
    # web-1: one disruptive action fits its budget (7 - 1 = 6).
    await fleet.act("migrate", "web-1", "web-1.5", replica="healer-a")
    # A restorative action and an interrupt cost nothing.
    await fleet.act("start", "web-1", "web-1.3", replica="healer-a")
    await fleet.act("interrupt", "web-1", "web-1.3", replica="healer-a")

    report = await fleet.report()
    assert report["unsafe_actions"] == []
    assert report["unsafe_count"] == 0
    assert report["actions"]["restart"] == {"success": 1}
    assert report["actions_by_replica"]["healer-a"]["migrate"] == 1


async def test_the_report_keys_are_stable(fleet: Fleet) -> None:
    await fleet.http.post(
        "/sim/faults", json={"kind": "unknown", "app_id": "web-1", "instance_id": "web-1.0"}
    )
    await fleet.act("restart", "web-1", "web-1.0")
    fleet.later(3)

    report = await fleet.report()
    assert report["faults_injected"] == {"total": 1, "by_kind": {"unknown": 1}, "instances": 1}
    assert report["actions"] == {"restart": {"success": 1}}
    assert report["instances_healed"] == 1
    assert report["unsafe_actions"] == []
    assert report["unsafe_count"] == 0
