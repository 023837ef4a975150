"""How many requests a second the CloudPilot client gets through, against the simulator.

Not a test: it prints figures. The simulator runs in its own process (``healer
simulate``) pinned to one core, the client in this one pinned to another, so
the figure is the client's own cost per request. For each transport (httpx's
native pool, and the httpx-aiohttp transport when installed) and each
concurrency, it sends a fixed number of queries spread over the fleet's apps
and prints requests per second, client CPU per request, and latency.

    .venv/bin/python bench/bench_client.py --apps 10000 --requests 3000
    .venv/bin/python bench/bench_client.py --call mix --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import structlog

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import QUERY_CALLS, ClientConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int) -> None:
    """Pin this process to one core, where the machine has it."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


@contextlib.contextmanager
def simulator(apps: int, seed: int, cpu: int) -> Iterator[str]:
    """``healer simulate`` in a child process on one core; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "healer.cli", "simulate", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--apps", str(apps), "--seed", str(seed)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=lambda: pin(cpu))
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if child.poll() is not None:
                raise SystemExit(f"simulator exited with {child.returncode}")
            try:
                httpx.get(f"{base_url}/sim/apps", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("simulator did not start within 120 s") from None
                time.sleep(0.2)
        yield base_url
    finally:
        child.terminate()
        child.wait(timeout=10)


def call_for(client: CloudPilotClient, name: str, app_id: str) -> Awaitable[Any]:
    if name == "instance_by_addr":
        return client.instance_by_addr(app_id, "127.0.0.1", 1)
    method: Callable[[str], Awaitable[Any]] = getattr(client, name)
    return method(app_id)


async def run_once(
    base_url: str,
    transport: str,
    concurrency: int,
    requests: int,
    calls: list[str],
    apps: list[str],
) -> dict[str, float]:
    config = ClientConfig(
        base_url=base_url,
        transport=transport,
        max_connections=max(concurrency, 1),
        max_keepalive_connections=max(concurrency, 1),
    )
    latencies: list[float] = []
    failures = 0

    def record(call: str, outcome: str, seconds: float) -> None:
        nonlocal failures
        latencies.append(seconds)
        failures += outcome != "ok"

    async with CloudPilotClient(config, on_request=record) as client:
        # Warm the pool and the code paths before measuring.
        await asyncio.gather(*(call_for(client, calls[0], apps[0]) for _ in range(concurrency)))
        latencies.clear()

        counter = iter(range(requests))

        async def worker() -> None:
            for n in counter:
                await call_for(client, calls[n % len(calls)], apps[n % len(apps)])

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0

    latencies.sort()
    return {
        "rate": requests / wall,
        "cpu_ms": cpu / requests * 1000,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000, help="apps in the simulated fleet")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--concurrency", default="1,32", help="comma-separated in-flight counts")
    parser.add_argument(
        "--call", default="instance_status", help="a query name, or 'mix' for all eight in turn"
    )
    parser.add_argument("--transports", default="native,aiohttp")
    parser.add_argument("--base-url", help="use a simulator already running here instead")
    args = parser.parse_args()

    # Only trouble is worth a line while measuring.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    calls = list(QUERY_CALLS) if args.call == "mix" else [args.call]
    transports = [t for t in args.transports.split(",") if t]
    if "aiohttp" in transports and importlib.util.find_spec("httpx_aiohttp") is None:
        print("httpx-aiohttp not installed: measuring the native transport only")
        transports.remove("aiohttp")
    levels = [int(c) for c in args.concurrency.split(",")]

    with contextlib.ExitStack() as stack:
        base_url = args.base_url or stack.enter_context(simulator(args.apps, args.seed, cpu=0))
        pin(1)
        apps = httpx.get(f"{base_url}/sim/apps").json()["app_ids"]
        print(
            f"client against simulator ({len(apps)} apps), call={args.call}, "
            f"{args.requests} requests each, client on one core, cores={os.cpu_count()}"
        )
        heads = ("transport", "conc", "req/s", "cpu ms/req", "p50 ms", "p99 ms", "fail")
        print("{:<9} {:>4} {:>8} {:>10} {:>7} {:>7} {:>5}".format(*heads))
        for transport in transports:
            for level in levels:
                r = asyncio.run(run_once(base_url, transport, level, args.requests, calls, apps))
                print(
                    f"{transport:<9} {level:>4} {r['rate']:>8.0f} {r['cpu_ms']:>10.3f} "
                    f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['failures']:>5.0f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
