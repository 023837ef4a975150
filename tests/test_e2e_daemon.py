"""The daemon end to end: healer against the simulator over loopback, judged by its auditor.

Each test runs a real ``Daemon`` (or ``healer run`` as a process) against a
simulated CloudPilot served on 127.0.0.1, on an SQLite file and on a
PostgreSQL schema of its own. What healer did is judged by the simulator's
auditor and by the true state of the simulated instances, never by what
healer says it did; the store (the ledger) is checked as well.

The policies here are the shipped ones with a short ``for`` (seconds, not
tens of seconds) and the poll interval is one second, so that a test takes
seconds; the shipped policies themselves run in ``test_e2e_demo.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from healer.cloudpilot.config import ClientConfig
from healer.config import EnrollmentConfig, HealerConfig, HttpConfig, LogConfig
from healer.daemon.service import Daemon
from healer.simulator import (
    ApiFaults,
    Durations,
    RunningSimulator,
    SimSettings,
    Simulator,
    serve_in_thread,
)
from healer.store import Store

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "e2e-admin-token-0123456789"

#: The shipped restart policies with a short ``for``, so that a test heals in seconds.
FAST_POLICIES: dict[str, str] = {
    "restart-unknown.yaml": """
name: restart-unknown
description: Restart UNKNOWN instances (fast, for tests).
priority: 100
when:
  status: [UNKNOWN]
  for: 2s
action: restart
limits:
  per_cycle: 1
  per_app_per_hour: 30
  instance_cooldown: 5m
verify:
  timeout: 1m
  healthy_for: 1s
""",
    "restart-process-down.yaml": """
name: restart-process-down
description: Restart RUNNING instances whose process is down (fast, for tests).
priority: 80
when:
  status: [RUNNING]
  proc_state: {not: [RUNNING, OK, UP, NORMAL]}
  for: 2s
action: restart
limits:
  per_cycle: 1
  per_app_per_hour: 30
  instance_cooldown: 5m
verify:
  timeout: 1m
  healthy_for: 1s
""",
}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store: an SQLite file, or a PostgreSQL schema created for this test alone."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/healer.db"
        return
    dsn = request.getfixturevalue("pg_dsn")
    name = f"healer_e2e_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(dsn)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    url = sa.make_url(dsn).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in FAST_POLICIES.items():
        (folder / name).write_text(text.lstrip(), encoding="utf-8")
    return folder


@contextlib.contextmanager
def simulated(apps: int, seed: int, **settings: Any) -> Iterator[RunningSimulator]:
    """A generated fleet without random faults, served from a thread on loopback."""
    sim = Simulator.generate(apps=apps, seed=seed, **settings)
    with serve_in_thread(sim) as served:
        yield served


def healer_config(
    served: RunningSimulator, store_url: str, policy_dir: Path, **overrides: Any
) -> HealerConfig:
    """A daemon configuration for tests: 1 s polls, reloads every second, an admin token."""
    values: dict[str, Any] = {
        "cloudpilot": ClientConfig(base_url=served.base_url, query_retries=0),
        "enrollment": EnrollmentConfig(apps=served.sim.app_ids),
        "poll_interval": timedelta(seconds=1),
        "policy_dir": policy_dir,
        "policy_reload_interval": timedelta(seconds=1),
        "store_url": store_url,
        "http": HttpConfig(listen="127.0.0.1:0", admin_token=SecretStr(ADMIN_TOKEN)),
        "log": LogConfig(level="warning", json=False),
        "replica_id": "healer-e2e",
    }
    values.update(overrides)
    return HealerConfig(**values)


@contextlib.asynccontextmanager
async def running(config: HealerConfig) -> AsyncIterator[Daemon]:
    daemon = Daemon(config)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, within: float = 30.0
) -> None:
    """Wait until ``check`` holds; fail naming ``what`` after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.2)


async def ready(daemon: Daemon) -> None:
    await eventually(daemon.ready, "a first complete sweep")


@contextlib.asynccontextmanager
async def one_healable_app(
    store_url: str, policy_dir: Path
) -> AsyncIterator[tuple[RunningSimulator, Simulator, str, str, Daemon]]:
    """A ready daemon over a small fleet, and one app and instance of it that healer may act on."""
    with simulated(6, seed=3, speed=5) as served:
        sim = served.sim
        app_id = healable_app(sim)
        iid = plain_instance(sim, app_id)
        async with running(healer_config(served, store_url, policy_dir)) as daemon:
            await ready(daemon)
            yield served, sim, app_id, iid, daemon


async def metric(port: int | None, name: str, **labels: str) -> float:
    """One sample from healer's /metrics, read over HTTP; 0 when the series is absent."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def plain_instance(sim: Simulator, app_id: str) -> str:
    """An instance healer may act on: RUNNING, healthy, in no special state."""
    app = sim.apps[app_id]
    for iid, inst in app.instances.items():
        if (
            inst.healthy()
            and inst.op is None
            and not inst.frozen
            and not inst.under_repair
            and not inst.migrating
            and iid not in app.disabled
        ):
            return iid
    raise AssertionError(f"{app_id} has no plain instance")


def healable_app(sim: Simulator, skip: tuple[str, ...] = ()) -> str:
    """An app with a known budget and at least two instances."""
    for app_id, app in sim.apps.items():
        if app_id not in skip and app.budget is not None and len(app.instances) >= 2:
            return app_id
    raise AssertionError("no healable app in the fleet")


def action_requests(sim: Simulator) -> int:
    """Action calls the simulator received, whether it answered them or not."""
    from healer.cloudpilot.models import Action

    report = sim.report()
    return sum(report["requests"].get(a.value, 0) for a in Action)


def actions_done(sim: Simulator) -> int:
    return sum(sum(by.values()) for by in sim.report()["actions"].values())


# -- correlated mass failure ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "gauge"),
    [
        # Seed 5, 12 apps: sh-01 holds 6 of the 12 apps, so the fleet brake must engage.
        ("sh-01", "healer_fleet_brake_engaged"),
        # hz-01 holds 3 apps (6, 20 and 6 instances): too few for the brake (at least 5
        # apps), so each app's short circuit (2+ unhealthy, over 50 % of R) must stop it.
        ("hz-01", "healer_apps_short_circuited"),
    ],
)
async def test_a_cluster_outage_trips_a_brake_and_no_instance_there_is_touched(
    store_url: str, policy_dir: Path, cluster: str, gauge: str
) -> None:
    with simulated(12, seed=5, speed=5) as served:
        sim = served.sim
        apps = [a for a, app in sim.apps.items() if app.cluster == cluster]
        async with running(healer_config(served, store_url, policy_dir)) as daemon:
            await ready(daemon)
            hit = sim.inject_fault("cluster_outage", cluster=cluster)
            assert {a for a, _ in hit} == set(apps)
            store = daemon.store
            assert store is not None

            async def refused_everywhere() -> bool:
                # Every app of the cluster had its restarts proposed (the `for` held) and refused.
                rows = await store.decisions(decision="refused", limit=100_000)
                return {r.app_id for r in rows} >= set(apps)

            await eventually(refused_everywhere, f"refusals for every app of {cluster}")
            engaged = await metric(daemon.http_port, gauge)
            refusals = await store.decisions(decision="refused", limit=100_000)
            ledger = await store.actions(limit=100_000)

        assert engaged >= 1
        expected = "fleet_brake" if gauge == "healer_fleet_brake_engaged" else "short_circuit"
        assert {r.reason for r in refusals} == {expected}
        assert ledger == []
        report = sim.report()
        assert report["actions"] == {}
        assert report["unsafe_count"] == 0
        for app_id, iid in hit:
            inst = sim.apps[app_id].instances[iid]
            assert inst.acted_since_fault is None, (app_id, iid)
            assert inst.state == "UNKNOWN", (app_id, iid)


# -- API outage -------------------------------------------------------------------------------

OUTAGE_SECONDS = 20.0


async def test_during_an_api_outage_nothing_is_done_and_healing_resumes_after_it(
    store_url: str, policy_dir: Path
) -> None:
    async with one_healable_app(store_url, policy_dir) as (served, sim, app_id, iid, daemon):
        store = daemon.store
        assert store is not None
        failed_before = await metric(daemon.http_port, "healer_cycles_total", result="skipped")

        async with httpx.AsyncClient(base_url=served.base_url) as sim_api:
            r = await sim_api.put("/sim/api-faults", json={"error_rate": 1.0})
            assert r.status_code == 200
            sim.inject_fault("unknown", app_id, iid)
            # The fault's `for` (2 s) passes many times over while CloudPilot answers 503.
            await asyncio.sleep(OUTAGE_SECONDS)
            during = action_requests(sim)
            ledger_during = await store.actions(limit=1000)
            skipped = await metric(daemon.http_port, "healer_cycles_total", result="skipped")
            r = await sim_api.put("/sim/api-faults", json={"error_rate": 0.0})
            assert r.status_code == 200

        assert during == 0
        assert ledger_during == []
        assert sim.state_of(app_id, iid) == "UNKNOWN"
        # healer did look, and saw the outage: its cycles were skipped.
        assert skipped - failed_before >= 6

        await eventually(
            lambda: sim.report()["instances_healed"] == 1, "the fault healed after the outage"
        )

        async def recorded_healed() -> bool:
            rows = await store.actions(app_id=app_id, outcome="healed")
            return len(rows) == 1

        await eventually(recorded_healed, "the ledger to record the heal")
        ledger = await store.actions(limit=1000)

    assert [(r.app_id, r.instance_id, r.action) for r in ledger] == [(app_id, iid, "restart")]
    report = sim.report()
    assert report["actions"] == {"restart": {"success": 1}}
    assert report["unsafe_count"] == 0
    assert sim.state_of(app_id, iid) == "RUNNING"


# -- a broken policy file saved while running --------------------------------------------------


async def test_a_broken_policy_file_keeps_the_last_good_set_healing_and_says_so(
    store_url: str, policy_dir: Path
) -> None:
    async with one_healable_app(store_url, policy_dir) as (_, sim, app_id, iid, daemon):
        port = daemon.http_port
        assert await metric(port, "healer_policies_loaded") == 2
        with structlog.testing.capture_logs() as logs:
            # Half-saved: the file that heals UNKNOWN instances loses its action.
            (policy_dir / "restart-unknown.yaml").write_text(
                "name: restart-unknown\nwhen:\n  status: [UNKNOWN]\n  for: 2s\n",
                encoding="utf-8",
            )

            async def reload_failed() -> bool:
                return await metric(port, "healer_policy_reload_errors_total") > 0

            await eventually(reload_failed, "a failed reload in the metrics")
            sim.inject_fault("unknown", app_id, iid)
            await eventually(
                lambda: sim.report()["instances_healed"] == 1,
                "the last good restart-unknown to heal the fault",
            )
            assert await metric(port, "healer_policy_last_reload_successful") == 0
            assert await metric(port, "healer_policies_loaded") == 2
            reloads_failed = await metric(port, "healer_policy_reload_errors_total")

            # Saved again as it was: the same set as before, and said so once.
            (policy_dir / "restart-unknown.yaml").write_text(
                FAST_POLICIES["restart-unknown.yaml"].lstrip(), encoding="utf-8"
            )

            async def reload_ok() -> bool:
                return await metric(port, "healer_policy_last_reload_successful") == 1

            await eventually(reload_ok, "a good reload once the file is whole again")
        assert daemon.engine is not None
        assert sorted(p.name for p in daemon.engine.policies) == [
            "restart-process-down",
            "restart-unknown",
        ]
        store = daemon.store
        assert store is not None
        ledger = await store.actions(limit=1000)

    failures = [e for e in logs if e["event"] == "policy_reload_failed"]
    # Logged once for the one broken save, however many reloads met it.
    assert len(failures) == 1 < reloads_failed, [e["event"] for e in logs]
    assert "restart-unknown.yaml" in " ".join(failures[0]["errors"])
    assert [e["changed"] for e in logs if e["event"] == "policies_recovered"] == [False]
    assert [(r.policy, r.instance_id) for r in ledger] == [("restart-unknown", iid)]
    assert sim.report()["unsafe_count"] == 0


# -- the admin API ------------------------------------------------------------------------------


async def test_pause_needs_the_admin_token_and_a_paused_app_is_left_alone_until_resumed(
    store_url: str, policy_dir: Path
) -> None:
    async with one_healable_app(store_url, policy_dir) as (_, sim, app_id, iid, daemon):
        store = daemon.store
        assert store is not None
        body = {"app_id": app_id, "who": "alice", "why": "e2e test", "for": "10m"}
        good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as api:
            no_token = await api.post("/v1/pause", json=body)
            wrong = await api.post("/v1/pause", json=body, headers={"Authorization": "Bearer nope"})
            not_bearer = await api.post(
                "/v1/pause", json=body, headers={"Authorization": ADMIN_TOKEN}
            )
            assert (no_token.status_code, wrong.status_code, not_bearer.status_code) == (
                401,
                401,
                401,
            )
            assert await store.active_pauses(_now()) == []

            paused = await api.post("/v1/pause", json=body, headers=good)
            assert paused.status_code == 200, paused.text
            assert paused.json()["paused"] == app_id
            assert await metric(daemon.http_port, "healer_paused", scope="app") == 1
            listed = (await api.get("/v1/pauses")).json()["pauses"]
            assert [(p["app_id"], p["scope"], p["who"], p["why"]) for p in listed] == [
                (app_id, "app", "alice", "e2e test")
            ]

            sim.inject_fault("unknown", app_id, iid)

            async def refused_paused() -> bool:
                rows = await store.decisions(app_id=app_id, decision="refused")
                return any(r.reason == "paused" for r in rows)

            await eventually(refused_paused, "a `paused` refusal for the paused app")
            assert action_requests(sim) == 0
            assert sim.state_of(app_id, iid) == "UNKNOWN"

            resume_no_token = await api.post("/v1/resume", json={"app_id": app_id, "who": "a"})
            assert resume_no_token.status_code == 401
            # A global resume ends the global pause only, and says the app's still holds.
            everything = {"who": "bob", "why": "fleet freeze", "for": "5m"}
            assert (await api.post("/v1/pause", json=everything, headers=good)).status_code == 200
            all_resumed = await api.post("/v1/resume", json={"who": "bob"}, headers=good)
            assert all_resumed.json() == {
                "resumed": "*",
                "pauses_removed": 1,
                "pauses_in_force": [app_id],
            }
            resumed = await api.post(
                "/v1/resume", json={"app_id": app_id, "who": "alice"}, headers=good
            )
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["pauses_removed"] == 1
            assert resumed.json()["pauses_in_force"] == []
            await eventually(lambda: sim.report()["instances_healed"] == 1, "healing after resume")
            assert await metric(daemon.http_port, "healer_paused", scope="app") == 0
            assert (await api.get("/v1/pauses")).json() == {"pauses": []}

    report = sim.report()
    assert report["actions"] == {"restart": {"success": 1}}
    assert report["unsafe_count"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"why": "no who", "for": "1h"}, "who"),
        ({"who": "alice", "why": "bad duration", "for": "soon"}, "for"),
        ({"who": "alice", "why": "too long", "for": "30d"}, "for"),
        ({"who": "alice", "why": "past", "until": "2020-01-01T00:00:00Z"}, "until"),
        ({"who": "alice", "why": "unknown key", "for": "1h", "app": "x"}, "app"),
    ],
)
async def test_a_bad_pause_body_is_refused_with_422_naming_the_field(
    store_url: str, policy_dir: Path, body: dict[str, Any], field: str
) -> None:
    with simulated(2, seed=3) as served:
        async with running(healer_config(served, store_url, policy_dir)) as daemon:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as api:
                r = await api.post(
                    "/v1/pause", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                )
            assert daemon.store is not None
            pauses = await daemon.store.active_pauses(_now())
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]]
    assert pauses == []


async def test_a_silence_set_over_http_refuses_the_apps_its_policy_selector_matches(
    store_url: str, policy_dir: Path
) -> None:
    async with one_healable_app(store_url, policy_dir) as (_, sim, app_id, iid, daemon):
        store = daemon.store
        assert store is not None
        select = {"app_id": [app_id], "exclude": {"cluster": ["no-such-cluster-*"]}}
        body = {"select": select, "who": "alice", "why": "e2e deploy", "for": "10m"}
        good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as api:
            no_token = await api.post("/v1/silences", json=body)
            bad = await api.post(
                "/v1/silences", json={**body, "select": {"prodcut": "x"}}, headers=good
            )
            assert (no_token.status_code, bad.status_code) == (401, 422)
            assert "select.prodcut" in [f["field"] for f in bad.json()["fields"]]
            assert await store.active_silences(_now()) == []

            added = await api.post("/v1/silences", json=body, headers=good)
            assert added.status_code == 200, added.text
            silence_id = added.json()["id"]
            listed = (await api.get("/v1/silences")).json()["silences"]
            assert [(s["id"], s["select"]) for s in listed] == [(silence_id, select)]

            sim.inject_fault("unknown", app_id, iid)

            async def refused_silenced() -> bool:
                rows = await store.decisions(app_id=app_id, decision="refused")
                return any(r.reason == "silenced" for r in rows)

            await eventually(refused_silenced, "a `silenced` refusal for the silenced app")
            assert action_requests(sim) == 0
            assert sim.state_of(app_id, iid) == "UNKNOWN"

            path = f"/v1/silences/{silence_id}"
            no_token = await api.request("DELETE", path, json={"who": "alice"})
            assert no_token.status_code == 401
            removed = await api.request("DELETE", path, json={"who": "alice"}, headers=good)
            assert removed.status_code == 200, removed.text
            assert (await api.get("/v1/silences")).json() == {"silences": []}
            await eventually(
                lambda: sim.report()["instances_healed"] == 1, "healing once unsilenced"
            )

    report = sim.report()
    assert report["actions"] == {"restart": {"success": 1}}
    assert report["unsafe_count"] == 0


# -- the read endpoints -------------------------------------------------------------------------


async def test_one_app_cloudpilot_never_answers_for_does_not_keep_healer_unready(
    store_url: str, policy_dir: Path
) -> None:
    with simulated(2, seed=3) as served:
        # An enrolled id CloudPilot does not know: every sweep is incomplete for it.
        apps = [*served.sim.app_ids, "no-such-app"]
        config = healer_config(
            served, store_url, policy_dir, enrollment=EnrollmentConfig(apps=apps)
        )
        async with running(config) as daemon:
            await ready(daemon)

            assert daemon.engine is not None
            assert daemon.engine.last_sweep is not None
            last = daemon.engine.last_sweep
            assert (last.apps, last.complete) == (3, 2)
            assert daemon.engine.complete_sweeps == 0


async def test_health_readiness_status_actions_and_metrics_answer_over_http(
    store_url: str, policy_dir: Path
) -> None:
    with simulated(4, seed=3, speed=5) as served:
        sim = served.sim
        app_id = healable_app(sim)
        iid = plain_instance(sim, app_id)
        # CloudPilot down from the start: no sweep can be complete, so healer is not ready.
        sim.api_faults = sim.api_faults.model_copy(update={"error_rate": 1.0})
        async with (
            running(healer_config(served, store_url, policy_dir)) as daemon,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.http_port}") as api,
        ):
            assert (await api.get("/healthz")).status_code == 200
            await eventually(
                lambda: daemon.engine is not None and daemon.engine.last_sweep is not None,
                "a first (incomplete) sweep",
            )
            not_ready = await api.get("/readyz")
            assert not_ready.status_code == 503

            sim.api_faults = sim.api_faults.model_copy(update={"error_rate": 0.0})
            await ready(daemon)
            assert (await api.get("/readyz")).status_code == 200

            sim.inject_fault("unknown", app_id, iid)

            async def healed_in_ledger() -> bool:
                r = await api.get("/v1/actions", params={"outcome": "healed"})
                return len(r.json()["actions"]) == 1

            await eventually(healed_in_ledger, "a healed action in /v1/actions")

            status = (await api.get("/v1/status")).json()
            one = (await api.get("/v1/status", params={"app": app_id})).json()
            missing = await api.get("/v1/status", params={"app": "no-such-app"})
            by_app = (await api.get("/v1/actions", params={"app": app_id})).json()
            other_app = next(a for a in sim.app_ids if a != app_id)
            by_other = (await api.get("/v1/actions", params={"app": other_app})).json()
            by_policy = (
                await api.get("/v1/actions", params={"policy": "restart-process-down"})
            ).json()
            recent = (await api.get("/v1/actions", params={"since": "1h"})).json()
            bad_since = await api.get("/v1/actions", params={"since": "yesterday"})
            bad_limit = await api.get("/v1/actions", params={"limit": "many"})
            metrics = await api.get("/metrics")

    assert status["ready"] is True
    assert status["enrolled"] == 4
    assert sorted(status["apps"]) == sorted(sim.app_ids)
    assert status["last_sweep"]["complete"] == 4
    assert list(one["apps"]) == [app_id]
    assert missing.status_code == 404

    [action] = by_app["actions"]
    assert (action["app_id"], action["instance_id"], action["policy"], action["action"]) == (
        app_id,
        iid,
        "restart-unknown",
        "restart",
    )
    assert action["outcome"] == "healed"
    assert by_other["actions"] == []
    assert by_policy["actions"] == []
    assert [a["id"] for a in recent["actions"]] == [action["id"]]
    assert bad_since.status_code == 400
    assert bad_limit.status_code == 400

    assert metrics.status_code == 200
    assert "healer_build_info{" in metrics.text
    assert 'healer_actions_total{action="restart",outcome="success",policy="restart-unknown"}' in (
        metrics.text
    )


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# -- SIGKILL mid-action ---------------------------------------------------------------------

#: Restarts when the process event fires: the event keeps firing until the instance is
#: healthy again, so while a restart runs this policy matches on every sweep, and only the
#: ledger (the action in flight) stands between healer and a second restart.
EVENT_POLICY = """
name: restart-proc-dead
description: Restart instances whose process-dead event fires (for the crash test).
priority: 90
when:
  event: {name: proc_dead}
  for: 1s
action: restart
limits:
  per_cycle: 1
  per_app_per_hour: 30
  instance_cooldown: 0s
verify:
  timeout: 2m
  healthy_for: 1s
"""

RESTART_SECONDS = 12.0


def healer_bin() -> str:
    return str(Path(sys.executable).with_name("healer"))


def start_healer(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [healer_bin(), "run", "--config", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_a_daemon_killed_mid_action_and_restarted_never_sends_the_action_twice(
    store_url: str, tmp_path: Path
) -> None:
    policies = tmp_path / "crash-policies"
    policies.mkdir()
    (policies / "restart-proc-dead.yaml").write_text(EVENT_POLICY.lstrip(), encoding="utf-8")
    settings = SimSettings(durations=Durations(restart=RESTART_SECONDS))
    with simulated(4, seed=3, settings=settings) as served:
        sim = served.sim
        app_id = healable_app(sim)
        iid = plain_instance(sim, app_id)
        port = free_port()
        config = tmp_path / "healer.yaml"
        config.write_text(
            "\n".join(
                [
                    f"cloudpilot: {{base_url: '{served.base_url}', query_retries: 0}}",
                    f"enrollment: {{apps: [{', '.join(sim.app_ids)}]}}",
                    "poll_interval: 1s",
                    f"policy_dir: '{policies}'",
                    f"store_url: '{store_url}'",
                    f"http: {{listen: '127.0.0.1:{port}'}}",
                    "replica_id: healer-e2e",
                    "log: {level: info, json: true}",
                ]
            ),
            encoding="utf-8",
        )
        log = tmp_path / "healer.log"
        # CloudPilot carries out the restart but its answer hangs: healer is killed while it
        # waits, with the action in the ledger as `issued` and no outcome.
        sim.api_faults = ApiFaults(timeout_rate=1.0, hang=60, paths=["/feiyun/action/"])
        first = start_healer(config, log)
        try:
            sim.inject_fault("process_down", app_id, iid)
            await eventually(
                lambda: sim.report()["actions"].get("restart", {}).get("success", 0) >= 1,
                "the first restart to reach CloudPilot",
            )
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()

        sim.api_faults = ApiFaults()
        inst = sim.apps[app_id].instances[iid]
        assert inst.state == "RESTARTING"  # the restart runs on while healer is down
        store = await Store.open(store_url)
        try:
            [issued] = await store.actions(limit=1000)
        finally:
            await store.close()
        assert (issued.instance_id, issued.outcome) == (iid, "issued")

        restarted_at = _now()
        second = start_healer(config, log)
        try:

            def second_ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(second_ready, "the restarted daemon to complete a sweep")
            # The event still fires and `for` has long held: the policy proposes again, every sweep.
            assert inst.state == "RESTARTING"
            await eventually(
                lambda: sim.report()["instances_healed"] == 1,
                "the one restart to heal the instance",
                within=RESTART_SECONDS + 15,
            )
            # A few sweeps more, after the heal, for anything late.
            await asyncio.sleep(3)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(timeout=20)
            except subprocess.TimeoutExpired:
                second.kill()

    report = sim.report()
    assert report["actions_by_replica"] == {"healer-e2e": {"restart": 1}}, log.read_text()[-4000:]
    assert report["unsafe_count"] == 0, report["unsafe_actions"]

    store = await Store.open(store_url)
    try:
        ledger = await store.actions(limit=1000)
        refusals = await store.decisions(
            app_id=app_id, since=restarted_at, decision="refused", limit=10_000
        )
    finally:
        await store.close()
    assert [(r.app_id, r.instance_id, r.action) for r in ledger] == [(app_id, iid, "restart")]
    # The restarted daemon did propose again, and its guard said no because of the ledger.
    assert "in_flight" in {r.reason for r in refusals}
