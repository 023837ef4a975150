"""``healer simulate``: serve a simulated CloudPilot on loopback until stopped.

The demo, the end-to-end tests and the benchmarks all meet CloudPilot here.
The fleet is generated from ``--apps`` and ``--seed`` (the same seed gives the
same fleet and fault schedule) or read from ``--scenario``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import structlog
import uvicorn

from healer.simulator.core import Simulator
from healer.simulator.server import build_app, uvicorn_config

log = structlog.get_logger("healer.simulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback)"
    )
    parser.add_argument("--port", type=int, default=8931, help="port to listen on (default: 8931)")
    parser.add_argument("--apps", type=int, default=20, help="apps in a generated fleet")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fleet and its faults")
    parser.add_argument("--scenario", type=Path, help="YAML file defining the fleet instead")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="divide operation durations by this"
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="scheduled faults per app per minute (default: 0, only injected faults)",
    )
    parser.add_argument(
        "--restart-fail-prob",
        type=float,
        default=0.0,
        help="chance that a restart ends in UNKNOWN (default: 0)",
    )
    parser.add_argument("--top-n", type=int, default=5, help="names listed per state (API: 5)")
    parser.add_argument(
        "--envelope", action="store_true", help="wrap answers in {code, message, data}"
    )
    parser.add_argument("--token-env", help="require the token held by this environment variable")
    parser.add_argument("--token-file", type=Path, help="require the token held in this file")
    parser.add_argument("--auth-header", default="Authorization", help="header carrying the token")
    parser.add_argument(
        "--http",
        choices=("auto", "h11", "httptools"),
        default="auto",
        help="uvicorn's HTTP parser (auto: httptools when installed)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (auto: uvloop when installed)",
    )


def _token(args: argparse.Namespace) -> str | None:
    if args.token_env:
        value = os.environ.get(args.token_env)
        if not value:
            raise SystemExit(f"healer simulate: --token-env {args.token_env} is unset or empty")
        return value
    if args.token_file:
        return Path(args.token_file).read_text(encoding="utf-8").strip() or None
    return None


def build_simulator(args: argparse.Namespace) -> Simulator:
    options = {
        "restart_fail_prob": args.restart_fail_prob,
        "top_n": args.top_n,
        "envelope": args.envelope,
        "token": _token(args),
        "auth_header": args.auth_header,
    }
    if args.scenario is not None:
        return Simulator.from_scenario(
            args.scenario, speed=args.speed, fault_rate=args.fault_rate, **options
        )
    return Simulator.generate(
        apps=args.apps, seed=args.seed, fault_rate=args.fault_rate, speed=args.speed, **options
    )


def run(args: argparse.Namespace) -> int:
    sim = build_simulator(args)
    server = uvicorn_config(
        build_app(sim), host=args.host, port=args.port, http=args.http, loop=args.loop
    )
    log.info(
        "sim_listening",
        base_url=f"http://{args.host}:{args.port}",
        apps=len(sim.apps),
        instances=sum(len(a.instances) for a in sim.apps.values()),
        seed=args.seed,
        fault_rate=args.fault_rate,
        speed=args.speed,
        envelope=args.envelope,
        auth=sim.settings.token is not None,
    )
    uvicorn.Server(server).run()
    return 0
