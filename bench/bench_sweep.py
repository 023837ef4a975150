"""What one sweep over a large fleet costs: seconds, API calls per app, CPU and memory.

Not a test: it prints figures. For each fleet size the simulator runs in its
own process (``healer simulate``, pinned to one core when there are two or
more), on loopback. For each client transport (``native`` httpx, ``aiohttp``)
a fresh healer process builds the engine as the daemon does (shipped
policies, an SQLite store in a temporary folder) and runs two sweeps, no
pacing (``observe_spread`` 0) so that the figure is the work, not the
schedule: the first sweep fetches every app's meta and budget, the second
finds them cached, as every later sweep of a running daemon does.

One app in a hundred carries an UNKNOWN instance, so that policies match
and condition memory is written; nothing is acted on (``for`` has not held).

    .venv/bin/python bench/bench_sweep.py                      # 1,000 and 10,000 apps
    .venv/bin/python bench/bench_sweep.py --apps 1000 --transports native
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sim_requests(base_url: str) -> int:
    report = httpx.get(f"{base_url}/sim/report", timeout=60).json()
    return int(sum(report["requests"].values()))


# -- one measurement, in a process of its own -------------------------------------------------


async def measure(
    base_url: str, apps: list[str], transport: str, concurrency: int
) -> dict[str, Any]:
    from healer.cloudpilot.client import CloudPilotClient
    from healer.cloudpilot.config import ClientConfig
    from healer.engine.engine import Engine, request_counter
    from healer.guard import GuardConfig
    from healer.observe.metrics import HealerMetrics
    from healer.policy.loader import PolicyDirectory
    from healer.store import Store

    policies = PolicyDirectory(ROOT / "policies").reload()
    assert policies.ok, policies.errors
    metrics = HealerMetrics()
    calls = request_counter(metrics)
    config = ClientConfig(
        base_url=base_url,
        transport=transport,  # type: ignore[arg-type]
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
    )
    rss_before = peak_rss_mib()
    with tempfile.TemporaryDirectory(prefix="healer-bench-") as tmp:
        store = await Store.open(f"sqlite:///{tmp}/healer.db")
        client = CloudPilotClient(config, on_request=calls)
        engine = Engine(
            client=client,
            store=store,
            guard=GuardConfig(),
            metrics=metrics,
            calls=calls,
            poll_interval=timedelta(seconds=60),
            observe_spread=0.0,
            concurrency=concurrency,
            replica_id="bench",
        )
        engine.policies = list(policies.policies)
        await engine.start()
        sweeps = []
        try:
            for _ in range(2):
                requests_before = sim_requests(base_url)
                cpu_before = cpu_seconds()
                started = time.perf_counter()
                result = await engine.sweep(apps)
                seconds = time.perf_counter() - started
                cpu = cpu_seconds() - cpu_before
                requests = sim_requests(base_url) - requests_before
                sweeps.append(
                    {
                        "seconds": seconds,
                        "calls_per_app": requests / len(apps),
                        "cpu_seconds": cpu,
                        "complete": result.complete,
                        "apps": result.apps,
                    }
                )
        finally:
            await client.aclose()
            await store.close()
    return {
        "transport": transport,
        "apps": len(apps),
        "sweeps": sweeps,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": rss_before,
    }


def child(args: argparse.Namespace) -> int:
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    apps = httpx.get(f"{args.base_url}/sim/apps", timeout=60).json()["app_ids"]
    result = asyncio.run(measure(args.base_url, apps, args.transport, args.concurrency))
    print(json.dumps(result))
    return 0


# -- the driver -------------------------------------------------------------------------------


def start_simulator(apps: int) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    healer = Path(sys.executable).with_name("healer")
    cmd = [str(healer), "simulate", "--port", str(port), "--apps", str(apps), "--seed", "1"]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(cores) > 1:
        cmd = ["taskset", "-c", str(cores[0]), *cmd]
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - t0 < 300:
        try:
            ids = httpx.get(f"{base_url}/sim/apps", timeout=5).json()["app_ids"]
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        server.kill()
        raise SystemExit("simulator did not start")
    # One app in a hundred with an UNKNOWN instance.
    for app_id in ids[::100]:
        r = httpx.post(f"{base_url}/sim/faults", json={"kind": "unknown", "app_id": app_id})
        r.raise_for_status()
    return server, base_url, time.perf_counter() - t0


def run_child(base_url: str, transport: str, concurrency: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--base-url", base_url]
    cmd += ["--transport", transport, "--concurrency", str(concurrency)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(cores) > 1:
        cmd = ["taskset", "-c", str(cores[1]), *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{transport}: child failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--apps", default="1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--transports", default="native,aiohttp", help="client transports")
    parser.add_argument("--concurrency", type=int, default=32, help="apps observed at once")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="native", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    print(
        f"{'apps':>6} {'transport':>9} {'sweep':>5} {'seconds':>8} {'calls/app':>9} "
        f"{'CPU s':>7} {'complete':>9} {'peak RSS':>9}"
    )
    for n in (int(a) for a in args.apps.split(",")):
        server, base_url, startup = start_simulator(n)
        try:
            for transport in args.transports.split(","):
                r = run_child(base_url, transport, args.concurrency)
                for i, s in enumerate(r["sweeps"], 1):
                    print(
                        f"{r['apps']:>6} {transport:>9} {i:>5} {s['seconds']:>8.2f} "
                        f"{s['calls_per_app']:>9.2f} {s['cpu_seconds']:>7.2f} "
                        f"{s['complete']:>4}/{s['apps']:<4} {r['peak_rss_mib']:>6.0f} MiB",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"  (simulator for {n} apps started in {startup:.1f} s, in its own process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
