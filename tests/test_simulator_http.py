"""The simulator's HTTP face: documented payloads, filters, envelope, auth, faults, control API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from healer.cloudpilot.models import KNOWN_STATES
from healer.simulator import ManualClock, Simulator, serve, serve_in_thread

SCENARIO = """
apps:
  web-1:
    meta: {product: search, module: web, cluster: bj-01, service_level: 1}
    budget: {instanceControlBudget: {type: MinAvailableRatio, value: 80}, replica: 10}
    instances:
      web-1.0: {}
      web-1.1: {status: UNKNOWN}
      web-1.2: {status: UNKNOWN}
      web-1.3: {status: UNKNOWN}
      web-1.4: {status: UNKNOWN}
      web-1.5: {status: UNKNOWN}
      web-1.6: {status: UNKNOWN}
      web-1.7: {status: UNKNOWN}
      web-1.8: {status: UNKNOWN}
      web-1.9: {}
  api-1:
    meta: {cluster: bj-01}
    replicas: 2
  far-1:
    meta: {cluster: sh-01}
    replicas: 2
"""

QUERY_KEYS = {
    "/res/capacity/getappmeta": {"app_meta"},
    "/pandora/getappminusable": {"min_usable_info"},
    "/feiyun/get/instance": {"app_id", "total_num", "status_instance_top_five"},
    "/feiyun/get/hardlimit": {"cpu"},
    "/feiyun/get/disabled": {"disabled_instance_id_list"},
    "/paas/instance/getinfo": {"instance_info_list"},
    "/alm/selfhealing/geteventlist": {"events"},
}


async def _served(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    path = tmp_path / "fleet.yaml"
    path.write_text(SCENARIO)
    sim = Simulator.from_scenario(path, clock=ManualClock(), **options)
    async with serve(sim) as running, httpx.AsyncClient(base_url=running.base_url) as http:
        yield sim, http


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    async for pair in _served(tmp_path):
        yield pair


# ------------------------------------------------------------------------- queries


@pytest.mark.parametrize(("path", "keys"), sorted(QUERY_KEYS.items()))
async def test_every_query_answers_its_documented_keys_at_the_top_level(
    served: tuple[Simulator, httpx.AsyncClient], path: str, keys: set[str]
) -> None:
    _, http = served

    r = await http.get(path, params={"app_id": "web-1"})

    assert r.status_code == 200
    assert keys <= set(r.json())


async def test_instance_info_uses_the_documented_field_names(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    r = await http.get("/paas/instance/getinfo", params={"app_id": "api-1"})

    assert set(r.json()["instance_info_list"][0]) == {
        "instance_id",
        "host_ip",
        "main_port",
        "proc_state",
        "container_state",
        "pass_agent_state",
        "frozen",
        "bsn_disabled",
        "under_repair",
        "migrating",
    }


async def test_instance_status_counts_every_state_and_names_at_most_five(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    body = (await http.get("/feiyun/get/instance", params={"app_id": "web-1"})).json()

    states = body["status_instance_top_five"]
    assert set(states) == set(KNOWN_STATES)
    assert "DESTORY" in states
    assert body["total_num"] == 10
    assert states["UNKNOWN"] == {
        "value": 8,
        "top_five_list": ["web-1.1", "web-1.2", "web-1.3", "web-1.4", "web-1.5"],
    }
    assert states["RUNNING"] == {"value": 2, "top_five_list": ["web-1.0", "web-1.9"]}


async def test_the_name_cap_is_a_setting(tmp_path: Path) -> None:
    async for _, http in _served(tmp_path, top_n=3):
        body = (await http.get("/feiyun/get/instance", params={"app_id": "web-1"})).json()

        assert body["status_instance_top_five"]["UNKNOWN"]["top_five_list"] == [
            "web-1.1",
            "web-1.2",
            "web-1.3",
        ]


async def test_the_status_filter_selects_running_or_the_rest(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    running = (
        await http.get("/feiyun/get/instance", params={"app_id": "web-1", "status": "RUNNING"})
    ).json()
    rest = (
        await http.get("/feiyun/get/instance", params={"app_id": "web-1", "status": "!RUNNING"})
    ).json()
    bad = await http.get("/feiyun/get/instance", params={"app_id": "web-1", "status": "BROKEN"})

    assert set(running["status_instance_top_five"]) == {"RUNNING"}
    assert "RUNNING" not in rest["status_instance_top_five"]
    assert rest["status_instance_top_five"]["UNKNOWN"]["value"] == 8
    assert bad.status_code == 400


async def test_a_missing_app_id_is_a_bad_request_and_an_unknown_app_is_not_found(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    assert (await http.get("/res/capacity/getappmeta")).status_code == 400
    assert (
        await http.get("/res/capacity/getappmeta", params={"app_id": "nope"})
    ).status_code == 404


async def test_an_event_named_by_address_resolves_through_the_address_lookup(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served
    fault = {
        "kind": "process_down",
        "app_id": "api-1",
        "instance_id": "api-1.1",
        "by_address": True,
    }
    await http.post("/sim/faults", json=fault)

    events = (await http.get("/alm/selfhealing/geteventlist", params={"app_id": "api-1"})).json()
    (event,) = events["events"]
    lookup = await http.get(
        "/shell/get/instance", params={"host_ip": event["host_ip"], "port": event["port"]}
    )

    assert "instance_id" not in event
    assert event["name"] == "proc_dead"
    assert event["status"] == "firing"
    assert lookup.json() == {"instance_id": "api-1.1"}


async def test_an_event_resolves_when_its_instance_is_healed(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, http = served
    await http.post(
        "/sim/faults", json={"kind": "process_down", "app_id": "api-1", "instance_id": "api-1.1"}
    )
    await http.post(
        "/feiyun/action/instance/restart", json={"app_id": "api-1", "instance_ids": ["api-1.1"]}
    )
    sim.advance(3)

    events = (await http.get("/alm/selfhealing/geteventlist", params={"app_id": "api-1"})).json()

    assert [(e["instance_id"], e["status"]) for e in events["events"]] == [("api-1.1", "resolved")]
    assert events["events"][0]["end_time"] is not None


async def test_an_unknown_address_names_no_instance(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    r = await http.get("/shell/get/instance", params={"host_ip": "192.0.2.250", "port": 1})

    assert r.json() == {"instance_id": None}


# ------------------------------------------------------------------ envelope and auth


async def test_the_envelope_option_wraps_answers_in_code_message_data(tmp_path: Path) -> None:
    async for _, http in _served(tmp_path, envelope=True):
        r = await http.get("/feiyun/get/disabled", params={"app_id": "api-1"})

        assert r.json() == {"code": 0, "message": "ok", "data": {"disabled_instance_id_list": []}}


async def test_with_a_token_set_a_call_without_it_is_unauthorized(tmp_path: Path) -> None:
    async for _, http in _served(tmp_path, token="s3cret"):
        without = await http.get("/res/capacity/getappmeta", params={"app_id": "api-1"})
        wrong = await http.get(
            "/res/capacity/getappmeta",
            params={"app_id": "api-1"},
            headers={"Authorization": "Bearer no"},
        )
        right = await http.get(
            "/res/capacity/getappmeta",
            params={"app_id": "api-1"},
            headers={"Authorization": "Bearer s3cret"},
        )
        control = await http.get("/sim/apps")

        assert (without.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
        assert control.status_code == 200


# ---------------------------------------------------------------------- API faults


async def test_an_error_fault_answers_an_html_5xx_and_does_not_run_the_action(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, http = served
    await http.put("/sim/api-faults", json={"error_rate": 1.0, "error_status": 502})

    r = await http.post(
        "/feiyun/action/instance/restart", json={"app_id": "api-1", "instance_ids": ["api-1.0"]}
    )

    assert r.status_code == 502
    assert r.headers["content-type"].startswith("text/html")
    assert sim.state_of("api-1", "api-1.0") == "RUNNING"
    # Not run, but received: counted under its own outcome.
    assert sim.report()["actions"] == {"restart": {"error": 1}}


async def test_a_malformed_body_is_truncated_json(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served
    await http.put("/sim/api-faults", json={"malformed_rate": 1.0})

    r = await http.get("/paas/instance/getinfo", params={"app_id": "web-1"})

    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


async def test_an_envelope_error_answers_200_with_a_non_zero_code(tmp_path: Path) -> None:
    async for _, http in _served(tmp_path, envelope=True):
        await http.put("/sim/api-faults", json={"envelope_error_rate": 1.0})

        r = await http.get("/res/capacity/getappmeta", params={"app_id": "api-1"})

        assert r.status_code == 200
        assert r.json()["code"] != 0
        assert r.json()["data"] is None


async def test_a_hung_action_times_out_at_the_client_but_still_runs(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, http = served
    await http.put("/sim/api-faults", json={"timeout_rate": 1.0, "hang": 5})

    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            "/feiyun/action/instance/restart",
            json={"app_id": "api-1", "instance_ids": ["api-1.0"]},
            timeout=0.3,
        )

    assert sim.state_of("api-1", "api-1.0") == "RESTARTING"
    await http.put("/sim/api-faults", json={})


async def test_latency_longer_than_the_client_timeout_times_out(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served
    await http.put("/sim/api-faults", json={"latency": 5})

    with pytest.raises(httpx.ReadTimeout):
        await http.get("/feiyun/get/disabled", params={"app_id": "api-1"}, timeout=0.3)
    await http.put("/sim/api-faults", json={})


async def test_partial_failure_fails_instances_without_touching_them(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, http = served
    await http.put("/sim/api-faults", json={"partial_failure_rate": 1.0})

    r = await http.post(
        "/feiyun/action/instance/restart",
        json={"app_id": "api-1", "instance_ids": ["api-1.0", "api-1.1"]},
    )

    assert r.json() == {"success_instances": [], "failed_instances": ["api-1.0", "api-1.1"]}
    assert sim.state_of("api-1", "api-1.0") == "RUNNING"


async def test_api_faults_can_be_limited_to_some_paths(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served
    await http.put("/sim/api-faults", json={"error_rate": 1.0, "paths": ["/paas/instance/getinfo"]})

    hit = await http.get("/paas/instance/getinfo", params={"app_id": "api-1"})
    spared = await http.get("/feiyun/get/instance", params={"app_id": "api-1"})

    assert (hit.status_code, spared.status_code) == (503, 200)


async def test_api_faults_never_touch_the_control_api(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served
    await http.put("/sim/api-faults", json={"error_rate": 1.0})

    assert (await http.get("/sim/report")).status_code == 200
    assert (await http.get("/sim/api-faults")).json()["error_rate"] == 1.0


async def test_an_unknown_api_fault_setting_is_refused(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    r = await http.put("/sim/api-faults", json={"eror_rate": 1.0})

    assert r.status_code == 400


# ---------------------------------------------------------------------- control API


async def test_sim_apps_lists_every_app_id(served: tuple[Simulator, httpx.AsyncClient]) -> None:
    _, http = served

    assert (await http.get("/sim/apps")).json() == {"app_ids": ["web-1", "api-1", "far-1"]}


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("unknown", "state", "UNKNOWN"),
        ("invalid_state", "state", "INVALID_STATE"),
        ("agent_down", "pass_agent_state", "DOWN"),
        ("process_down", "proc_state", "DEAD"),
        ("container_down", "container_state", "EXITED"),
        ("frozen", "frozen", True),
    ],
)
async def test_each_instance_fault_changes_what_the_api_shows(
    served: tuple[Simulator, httpx.AsyncClient], kind: str, field: str, value: Any
) -> None:
    sim, http = served

    r = await http.post(
        "/sim/faults", json={"kind": kind, "app_id": "api-1", "instance_id": "api-1.0"}
    )

    assert r.json()["injected"] == [{"app_id": "api-1", "instance_id": "api-1.0"}]
    assert getattr(sim.instance("api-1", "api-1.0"), field) == value
    assert sim.report()["faults_injected"]["by_kind"] == {kind: 1}


async def test_a_cluster_outage_takes_down_every_instance_in_that_cluster_only(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, http = served

    r = await http.post("/sim/faults", json={"kind": "cluster_outage", "cluster": "bj-01"})

    assert len(r.json()["injected"]) == 12
    assert {sim.state_of("web-1", f"web-1.{n}") for n in range(10)} == {"UNKNOWN"}
    assert {sim.state_of("api-1", f"api-1.{n}") for n in range(2)} == {"UNKNOWN"}
    assert {sim.state_of("far-1", f"far-1.{n}") for n in range(2)} == {"RUNNING"}
    assert sim.report()["faults_injected"]["by_kind"] == {"cluster_outage": 1}


async def test_a_fault_with_an_unknown_kind_or_target_is_refused(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    _, http = served

    bad_kind = await http.post("/sim/faults", json={"kind": "meteor", "app_id": "api-1"})
    bad_app = await http.post("/sim/faults", json={"kind": "unknown", "app_id": "nope"})

    assert (bad_kind.status_code, bad_app.status_code) == (400, 400)


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"kind": "unknown", "app_id": "api-1", "instance_ids": "api-1.0"}, "instance_ids"),
        ({"kind": "unknown", "app_id": "api-1", "instance_ids": []}, "instance_ids"),
        ({"kind": "unknown", "app_id": "api-1", "instance": "api-1.0"}, "instance"),
        ({"kind": "unknown", "app_id": "api-1", "by_address": "yes"}, "by_address"),
        ({"app_id": "api-1"}, "kind"),
        (["unknown"], "body"),
        ({"kind": "unknown", "app_id": "api-1", "instance_ids": ["api-1.0", "api-1.0"]}, "body"),
        ({"kind": "unknown", "app_id": "api-1", "instance_id": "a", "instance_ids": ["b"]}, "body"),
        ({"kind": "cluster_outage", "app_id": "api-1", "instance_ids": ["api-1.0"]}, "body"),
        ({"kind": "cluster_outage", "cluster": "no-such-cluster"}, "no app runs"),
    ],
)
async def test_a_malformed_fault_body_is_a_400_naming_the_field_and_hits_nothing(
    served: tuple[Simulator, httpx.AsyncClient], body: object, names: str
) -> None:
    sim, http = served

    r = await http.post("/sim/faults", json=body)

    assert r.status_code == 400
    assert r.json()["message"].startswith(names)
    assert sim.report()["faults_injected"]["total"] == 0


async def test_a_fault_naming_one_missing_instance_among_several_hits_none_of_them(
    served: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, http = served
    body = {"kind": "unknown", "app_id": "api-1", "instance_ids": ["api-1.0", "api-1.9"]}

    r = await http.post("/sim/faults", json=body)

    assert r.status_code == 400
    assert "api-1.9" in r.json()["message"]
    assert sim.state_of("api-1", "api-1.0") == "RUNNING"
    assert sim.report()["faults_injected"]["total"] == 0


# ------------------------------------------------------------------- sync serving


def test_serve_in_thread_answers_sync_callers() -> None:
    sim = Simulator.generate(apps=3, seed=2)

    with serve_in_thread(sim) as running:
        r = httpx.get(f"{running.base_url}/sim/apps")

    assert running.base_url.startswith("http://127.0.0.1:")
    assert r.json() == {"app_ids": ["app-0001", "app-0002", "app-0003"]}
