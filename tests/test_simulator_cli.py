"""``healer simulate`` as a separate process: the issue's "done when", over real loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port

QUERY_KEYS = {
    "/res/capacity/getappmeta": {"app_meta"},
    "/pandora/getappminusable": {"min_usable_info"},
    "/feiyun/get/instance": {"app_id", "total_num", "status_instance_top_five"},
    "/feiyun/get/hardlimit": {"cpu", "cpu_quota", "cpu_limit", "memory", "disk"},
    "/feiyun/get/disabled": {"disabled_instance_id_list"},
    "/paas/instance/getinfo": {"instance_info_list"},
    "/alm/selfhealing/geteventlist": {"events"},
}


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    port = free_port()
    healer = Path(sys.executable).with_name("healer")
    cmd = [str(healer), "simulate", "--port", str(port), "--apps", "5", "--seed", "7"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/sim/apps", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"healer simulate did not start: {err}")
                time.sleep(0.05)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_query_for_every_listed_app_answers_the_documented_keys(simulator: str) -> None:
    with httpx.Client(base_url=simulator) as http:
        apps = http.get("/sim/apps").json()["app_ids"]
        assert apps == ["app-0001", "app-0002", "app-0003", "app-0004", "app-0005"]
        for app_id in apps:
            for path, keys in QUERY_KEYS.items():
                r = http.get(path, params={"app_id": app_id})

                assert r.status_code == 200, (path, app_id)
                assert keys <= set(r.json()), (path, app_id)
            first = http.get("/paas/instance/getinfo", params={"app_id": app_id}).json()
            inst = first["instance_info_list"][0]
            lookup = http.get(
                "/shell/get/instance",
                params={"host_ip": inst["host_ip"], "port": inst["main_port"]},
            )
            assert lookup.json() == {"instance_id": inst["instance_id"]}


def _state(http: httpx.Client, app_id: str, iid: str) -> str | None:
    """The state whose top-five list names ``iid`` (the app is small enough for that)."""
    body = http.get("/feiyun/get/instance", params={"app_id": app_id, "status": "ALL"}).json()
    for state, bucket in body["status_instance_top_five"].items():
        if iid in bucket["top_five_list"]:
            return str(state)
    return None


def test_a_restart_is_seen_restarting_then_running_and_the_report_counts_it(simulator: str) -> None:
    with httpx.Client(base_url=simulator) as http:
        info = http.get("/paas/instance/getinfo", params={"app_id": "app-0002"}).json()
        healthy = [i for i in info["instance_info_list"] if not (i["frozen"] or i["bsn_disabled"])]
        iid = healthy[0]["instance_id"]
        assert _state(http, "app-0002", iid) == "RUNNING"

        answer = http.post(
            "/feiyun/action/instance/restart", json={"app_id": "app-0002", "instance_ids": [iid]}
        ).json()
        seen = [_state(http, "app-0002", iid)]
        deadline = time.monotonic() + 20
        while seen[-1] != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
            seen.append(_state(http, "app-0002", iid))
        report = http.get("/sim/report").json()

    assert answer == {"success_instances": [iid], "failed_instances": []}
    assert seen[0] == "RESTARTING"
    assert seen[-1] == "RUNNING"
    assert report["actions"]["restart"] == {"success": 1}


# -- the fault mix ------------------------------------------------------------------------------


def _parsed(*argv: str) -> object:
    import argparse

    from healer.simulator.cli import add_arguments

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_fault_mix_with_cluster_outages_schedules_them() -> None:
    from healer.simulator import ManualClock, Simulator
    from healer.simulator.cli import build_simulator

    args = _parsed("--apps", "30", "--seed", "3", "--fault-rate", "2", "--fault-mix",
                   "cluster_outage=1,unknown=0,process_down=0,agent_down=0,container_down=0,"
                   "invalid_state=0,frozen=0")  # fmt: skip
    mix = build_simulator(args).settings.fault_mix  # type: ignore[arg-type]
    sim = Simulator.generate(apps=30, seed=3, fault_rate=2, clock=ManualClock())
    sim.settings.fault_mix = mix
    sim.advance(60)

    assert mix["cluster_outage"] == 1 and mix["unknown"] == 0
    assert sim.report()["faults_injected"]["by_kind"].keys() == {"cluster_outage"}


@pytest.mark.parametrize("mix", ["meteor=1", "unknown", "unknown=-1", "unknown=x"])
def test_a_bad_fault_mix_is_refused_by_the_command_line(mix: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentError, match="fault-mix"):
        _parsed("--fault-mix", mix)


def test_a_fault_mix_of_only_zero_weights_with_a_fault_rate_is_refused() -> None:
    from healer.simulator.cli import run
    from healer.simulator.core import FAULT_KINDS

    zero = ",".join(f"{k}=0" for k in FAULT_KINDS)
    args = _parsed("--port", "0", "--fault-rate", "1", "--fault-mix", zero)

    assert run(args) == 2  # type: ignore[arg-type]
