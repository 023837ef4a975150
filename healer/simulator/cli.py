"""``healer simulate``: serve a simulated CloudPilot on loopback until stopped.

The demo, the end-to-end tests and the benchmarks all meet CloudPilot here.
The fleet is generated from ``--apps`` and ``--seed`` (the same seed gives the
same fleet and fault schedule) or read from ``--scenario``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import structlog
import uvicorn

from healer.files import MAX_TOKEN_BYTES, read_text
from healer.simulator.core import FAULT_KINDS, Simulator
from healer.simulator.scenario import ScenarioError
from healer.simulator.server import _bind, build_app, uvicorn_config

log = structlog.get_logger("healer.simulator")


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def _number(
    low: float, high: float | None = None, *, above: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite number at least ``low`` (above it if ``above``), to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        too_low = value <= low if above else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bounds = f"above {low:g}" if above else f"at least {low:g}"
            if high is not None:
                bounds = f"from {low:g} to {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def _fault_mix(text: str) -> dict[str, float]:
    """An argparse type: ``kind=weight,...`` over the known fault kinds, weights at least 0."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, sep, weight = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in FAULT_KINDS:
            msg = f"{part.strip()!r}: give kind=weight, kind one of {', '.join(FAULT_KINDS)}"
            raise argparse.ArgumentTypeError(msg)
        mix[kind] = _number(0)(weight.strip())
    return mix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: loopback)"
    )
    parser.add_argument(
        "--port",
        type=_whole(0, 65535),
        default=8931,
        help="port to listen on, 0 for any free one (default: 8931)",
    )
    parser.add_argument(
        "--apps", type=_whole(1), default=20, help="apps in a generated fleet (at least 1)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the fleet and its faults")
    parser.add_argument("--scenario", type=Path, help="YAML file defining the fleet instead")
    parser.add_argument(
        "--speed",
        type=_number(0, above=True),
        default=1.0,
        help="divide operation durations by this (above 0; default 1)",
    )
    parser.add_argument(
        "--fault-rate",
        type=_number(0),
        default=0.0,
        help="scheduled faults per app per minute (default: 0, only injected faults)",
    )
    parser.add_argument(
        "--fault-mix",
        type=_fault_mix,
        default={},
        metavar="KIND=W,...",
        help="weights of scheduled fault kinds, over the defaults "
        "(e.g. cluster_outage=1 adds correlated cluster outages; default weight 0)",
    )
    parser.add_argument(
        "--restart-fail-prob",
        type=_number(0, 1),
        default=0.0,
        help="chance, from 0 to 1, that a restart ends in UNKNOWN (default: 0)",
    )
    parser.add_argument(
        "--top-n", type=_whole(1), default=5, help="names listed per state (API: 5)"
    )
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
        try:
            return read_text(Path(args.token_file), MAX_TOKEN_BYTES).strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"healer simulate: --token-file {args.token_file}: {exc}") from None
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
        sim = Simulator.from_scenario(
            args.scenario, speed=args.speed, fault_rate=args.fault_rate, **options
        )
    else:
        sim = Simulator.generate(
            apps=args.apps, seed=args.seed, fault_rate=args.fault_rate, speed=args.speed, **options
        )
    sim.settings.fault_mix = {**sim.settings.fault_mix, **args.fault_mix}
    return sim


def run(args: argparse.Namespace) -> int:
    try:
        sim = build_simulator(args)
    except ScenarioError as exc:
        print(f"healer simulate: --scenario: {exc}", file=sys.stderr)
        return 2
    if sim.settings.fault_rate > 0 and not any(w > 0 for w in sim.settings.fault_mix.values()):
        print("healer simulate: --fault-mix leaves every fault kind at weight 0", file=sys.stderr)
        return 2
    server = uvicorn_config(build_app(sim), http=args.http, loop=args.loop)
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        # Said before anything is logged as listening: nothing is.
        print(f"healer simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = int(sock.getsockname()[1])
    log.info(
        "sim_listening",
        base_url=f"http://{args.host}:{port}",
        apps=len(sim.apps),
        instances=sum(len(a.instances) for a in sim.apps.values()),
        seed=args.seed,
        fault_rate=args.fault_rate,
        speed=args.speed,
        envelope=args.envelope,
        auth=sim.settings.token is not None,
    )
    try:
        uvicorn.Server(server).run(sockets=[sock])
    finally:
        sock.close()
    return 0
