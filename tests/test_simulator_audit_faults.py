"""The auditor sees every action it receives, even one the API answers with an error.

An action call that hits an injected API fault (the HTML error page, an
envelope error) or a missing or wrong token is answered before it runs; it
must still be audited against the true state at that moment and counted under
its own outcome, without changing anything. A call whose answer hangs or comes
back truncated did run, and is audited and counted like any other. Everything
goes over loopback HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from healer.simulator import ManualClock, Simulator, serve

SCENARIO = """
seed: 7
settings: {replace_deleted: false}
apps:
  web-1:
    budget: {instanceControlBudget: {type: MinAvailableRatio, value: 50}, replica: 4}
    instances:
      web-1.0: {frozen: true}
      web-1.1: {}
      web-1.2: {}
      web-1.3: {}
  small-1:
    budget: {instanceControlBudget: {type: MinAvailableRatio, value: 60}, replica: 3}
    instances:
      small-1.0: {}
      small-1.1: {}
      small-1.2: {}
"""

TOKEN = "s3cret"


@dataclass(frozen=True)
class Fault:
    """One way an action call can be answered, and what the auditor must make of it."""

    name: str
    #: What the simulator counts the call under.
    outcome: str
    #: False when the answer is an error and the action must not have run.
    runs: bool
    status: int
    api_faults: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None


REFUSED = [
    Fault("error_rate", "error", runs=False, status=503, api_faults={"error_rate": 1.0}),
    Fault(
        "envelope_error_rate",
        "envelope_error",
        runs=False,
        status=200,
        api_faults={"envelope_error_rate": 1.0},
    ),
    Fault("missing_token", "unauthorized", runs=False, status=401, token=TOKEN),
    Fault(
        "wrong_token",
        "unauthorized",
        runs=False,
        status=401,
        token=TOKEN,
        headers={"Authorization": "Bearer not-it"},
    ),
]
# These answers are broken, but the action ran: counted by what it did.
RAN = [
    Fault("malformed_rate", "", runs=True, status=200, api_faults={"malformed_rate": 1.0}),
    Fault("timeout_rate", "", runs=True, status=200, api_faults={"timeout_rate": 1.0, "hang": 0.2}),
]
ALL = REFUSED + RAN
NO_FAULT = Fault("none", "", runs=True, status=200)


class Fleet:
    """A served scenario with a manual clock and a raw HTTP client."""

    def __init__(self, sim: Simulator, http: httpx.AsyncClient) -> None:
        self.sim = sim
        self.http = http

    async def fault(self, fault: Fault) -> None:
        r = await self.http.put("/sim/api-faults", json=fault.api_faults)
        assert r.status_code == 200

    async def act(
        self, fault: Fault, action: str, app_id: str, *ids: str, replica: str | None = None
    ) -> httpx.Response:
        headers = dict(fault.headers)
        if replica is not None:
            headers["X-Healer-Replica"] = replica
        body = {"app_id": app_id, "instance_ids": list(ids)}
        return await self.http.post(
            f"/feiyun/action/instance/{action}", json=body, headers=headers, timeout=5
        )

    async def app(self, app_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/sim/apps/{app_id}")
        assert r.status_code == 200
        return dict(r.json())

    async def report(self) -> dict[str, Any]:
        return dict((await self.http.get("/sim/report")).json())


@contextlib.asynccontextmanager
async def _fleet(
    tmp_path: Path, token: str | None = None, name: str = "fleet"
) -> AsyncIterator[Fleet]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SCENARIO)
    options: dict[str, Any] = {} if token is None else {"token": token}
    sim = Simulator.from_scenario(path, clock=ManualClock(), **options)
    async with serve(sim) as running, httpx.AsyncClient(base_url=running.base_url) as http:
        yield Fleet(sim, http)


def _kinds(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(u["kind"], u["action"], u["instance_id"]) for u in report["unsafe_actions"]]


def _assert_answered_as(r: httpx.Response, fault: Fault) -> None:
    assert r.status_code == fault.status
    if fault.name == "envelope_error_rate":
        assert r.json()["code"] != 0
    if fault.name == "error_rate":
        assert r.headers["content-type"].startswith("text/html")


# ------------------------------------------------------------ frozen, under each fault


@pytest.mark.parametrize("fault", ALL, ids=lambda f: f.name)
async def test_restarting_a_frozen_instance_is_unsafe_whatever_the_answer(
    tmp_path: Path, fault: Fault
) -> None:
    async with _fleet(tmp_path, fault.token) as fleet:
        before = await fleet.app("web-1")
        await fleet.fault(fault)

        r = await fleet.act(fault, "restart", "web-1", "web-1.0")
        await fleet.fault(NO_FAULT)
        report = await fleet.report()

        _assert_answered_as(r, fault)
        assert _kinds(report) == [("frozen", "restart", "web-1.0")]
        # CloudPilot refuses to restart a frozen instance: when it ran, it failed.
        outcome = fault.outcome or "failed"
        assert report["actions"] == {"restart": {outcome: 1}}
        assert report["unsafe_count"] == 1
        assert report["unsafe_by_kind"] == {"frozen": 1}
        [entry] = report["unsafe_actions"]
        assert entry.get("answered") == (None if fault.runs else fault.outcome)
        assert (await fleet.app("web-1")) == before


@pytest.mark.parametrize("fault", ALL, ids=lambda f: f.name)
async def test_a_safe_restart_under_the_same_fault_is_counted_and_not_unsafe(
    tmp_path: Path, fault: Fault
) -> None:
    async with _fleet(tmp_path, fault.token) as fleet:
        before = await fleet.app("web-1")
        await fleet.fault(fault)

        r = await fleet.act(fault, "restart", "web-1", "web-1.1", replica="healer-a")
        await fleet.fault(NO_FAULT)
        report = await fleet.report()
        after = await fleet.app("web-1")

        _assert_answered_as(r, fault)
        assert report["unsafe_count"] == 0
        assert report["unsafe_actions"] == []
        assert report["actions"] == {"restart": {fault.outcome or "success": 1}}
        assert report["actions_by_replica"] == {"healer-a": {"restart": 1}}
        if fault.runs:
            assert after["instances"]["web-1.1"]["state"] == "RESTARTING"
        else:
            assert after == before


@pytest.mark.parametrize("fault", REFUSED, ids=lambda f: f.name)
async def test_a_refused_action_never_takes_effect_later_either(
    tmp_path: Path, fault: Fault
) -> None:
    async with _fleet(tmp_path, fault.token) as fleet:
        before = await fleet.app("web-1")
        await fleet.fault(fault)
        await fleet.act(fault, "migrate", "web-1", "web-1.1", "web-1.2")
        await fleet.act(fault, "unfreeze", "web-1", "web-1.0")
        await fleet.fault(NO_FAULT)

        fleet.sim.advance(3600)

        assert (await fleet.app("web-1")) == before
        report = await fleet.report()
        assert report["actions"] == {
            "migrate": {fault.outcome: 2},
            "unfreeze": {fault.outcome: 1},
        }
        assert report["instances_healed"] == 0


# -------------------------------------------------- the same arithmetic as if it had run


async def _unsafe_entries(tmp_path: Path, fault: Fault, *ids: str) -> list[dict[str, Any]]:
    async with _fleet(tmp_path, fault.token, name=fault.name) as fleet:
        await fleet.http.put("/sim/leader", json={"replica": "healer-a"})
        await fleet.fault(fault)
        await fleet.act(fault, "restart", "small-1", *ids, replica="healer-b")
        report = await fleet.report()
    return [{k: v for k, v in u.items() if k != "answered"} for u in report["unsafe_actions"]]


@pytest.mark.parametrize("fault", REFUSED, ids=lambda f: f.name)
async def test_a_refused_action_is_audited_exactly_as_if_it_had_run(
    tmp_path: Path, fault: Fault
) -> None:
    # Three restarts where two may go, from a replica that is not the leader, one named twice.
    ids = ("small-1.0", "small-1.1", "small-1.1")
    ran = await _unsafe_entries(tmp_path, NO_FAULT, *ids)
    refused = await _unsafe_entries(tmp_path, fault, *ids)

    kinds = [(u["kind"], u["instance_id"]) for u in ran]
    assert kinds == [
        ("not_leader", "small-1.0"),
        ("not_leader", "small-1.1"),
        ("below_required", "small-1.1"),
        ("not_leader", "small-1.1"),
        ("in_flight", "small-1.1"),
    ]
    below = ran[2]
    assert (below["required"], below["available_before"], below["available_after"]) == (2, 2, 1)
    assert refused == ran


async def test_a_refused_restart_of_an_instance_already_restarting_is_in_flight(
    tmp_path: Path,
) -> None:
    fault = REFUSED[0]
    async with _fleet(tmp_path) as fleet:
        ok = await fleet.act(NO_FAULT, "restart", "web-1", "web-1.1")
        assert ok.status_code == 200
        before = await fleet.app("web-1")
        await fleet.fault(fault)

        await fleet.act(fault, "restart", "web-1", "web-1.1")
        report = await fleet.report()

        assert _kinds(report) == [("in_flight", "restart", "web-1.1")]
        assert report["unsafe_actions"][0]["previous_action"] == "restart"
        assert report["actions"] == {"restart": {"success": 1, "error": 1}}
        assert (await fleet.app("web-1")) == before


# ------------------------------------------------------- calls with nothing to audit


@pytest.mark.parametrize("fault", REFUSED, ids=lambda f: f.name)
@pytest.mark.parametrize(
    "content",
    [b"not json", b"[1, 2]", b'{"instance_ids": ["web-1.0"]}', b'{"app_id": "web-1"}'],
    ids=["not_json", "not_object", "no_app", "no_instances"],
)
async def test_a_body_naming_no_app_and_instances_gets_the_same_answer_and_no_count(
    tmp_path: Path, fault: Fault, content: bytes
) -> None:
    async with _fleet(tmp_path, fault.token) as fleet:
        await fleet.fault(fault)

        r = await fleet.http.post(
            "/feiyun/action/instance/restart",
            content=content,
            headers={"Content-Type": "application/json", **fault.headers},
        )
        report = await fleet.report()

        _assert_answered_as(r, fault)
        assert report["actions"] == {}
        assert report["unsafe_count"] == 0
        assert report["requests"] == {"restart": 1}


@pytest.mark.parametrize("fault", REFUSED, ids=lambda f: f.name)
async def test_an_unknown_app_or_instance_has_nothing_unsafe(tmp_path: Path, fault: Fault) -> None:
    async with _fleet(tmp_path, fault.token) as fleet:
        await fleet.fault(fault)

        unknown_app = await fleet.act(fault, "restart", "no-such-app", "x.0")
        unknown_instance = await fleet.act(fault, "restart", "web-1", "no-such-instance")
        report = await fleet.report()

        _assert_answered_as(unknown_app, fault)
        _assert_answered_as(unknown_instance, fault)
        assert report["actions"] == {"restart": {fault.outcome: 1}}
        assert report["unsafe_count"] == 0
