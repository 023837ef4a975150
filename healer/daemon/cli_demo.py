"""``healer demo``: a simulated CloudPilot fleet with random faults, and healer healing it.

Everything runs in this process on loopback: the simulator (in a thread of
its own), the daemon with the shipped policies and an SQLite store in a
temporary folder, and healer's HTTP server on ``--port``. Faults are drawn
during the first part of the run (``--fault-window``); the rest lets the
last of them heal. At the end the simulator's auditor says what happened,
and the run fails (exit 1) if it saw a single unsafe action.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from healer.cloudpilot.config import ClientConfig
from healer.config import LOG_LEVELS, EnrollmentConfig, HealerConfig, HttpConfig, LogConfig
from healer.daemon.service import Daemon, StartupError
from healer.observe.logging import configure_logging
from healer.simulator import Simulator, serve_in_thread

#: Fault kinds the shipped policies repair; the others are there to be left alone.
COVERED_FAULTS = ("unknown", "process_down", "container_down", "agent_down")

#: Seconds the slowest shipped repair takes from fault to healed at the demo's 2 s poll:
#: migrate-agent-down's ``for: 30s``, up to two polls and a sweep, and the 8 s migration.
DRAIN_S = 45.0


def default_policy_dir() -> Path:
    """The shipped policies: ``policies/`` of a checkout, else those installed with healer."""
    checkout = Path(__file__).resolve().parents[2] / "policies"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "healer" / "policies"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--apps", type=int, default=20, help="apps in the fleet (default 20)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    parser.add_argument("--seed", type=int, default=1, help="fleet and fault seed (default 1)")
    parser.add_argument(
        "--port", type=int, default=0, help="healer's HTTP port on 127.0.0.1 (default: free)"
    )
    parser.add_argument("--summary", type=Path, help="also write the JSON summary here")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.3,
        # More on a small fleet is a correlated failure by the fleet brake's definition
        # (over 20 % and at least 5 apps unhealthy at once), and the brake then stops the
        # very repairs that would release it: the demo would heal nothing.
        help="random faults per app per minute while faults run (default 0.3)",
    )
    parser.add_argument(
        "--fault-window",
        type=float,
        default=None,
        help=f"seconds during which faults are drawn (default: --duration less {DRAIN_S:.0f}s, "
        "at least a quarter of it)",
    )
    parser.add_argument("--poll", type=float, default=2.0, help="poll interval seconds (2)")
    parser.add_argument("--policies", type=Path, default=None, help="policy directory")
    parser.add_argument("--store", default=None, help="store URL (default: SQLite in a temp dir)")
    parser.add_argument("--quiet", action="store_true", help="no live status lines")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=LOG_LEVELS,
        help="daemon log level (warning)",
    )


def run(args: argparse.Namespace) -> int:
    if args.apps < 1:
        print("healer demo: --apps must be at least 1", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("healer demo: --duration must be positive", file=sys.stderr)
        return 2
    if args.poll <= 0:
        print("healer demo: --poll must be positive", file=sys.stderr)
        return 2
    policy_dir = args.policies or default_policy_dir()
    if not policy_dir.is_dir():
        print(f"healer demo: no policy directory at {policy_dir}; pass --policies", file=sys.stderr)
        return 2
    configure_logging(args.log_level, json=False)
    try:
        return asyncio.run(_demo(args, policy_dir))
    except KeyboardInterrupt:
        return 130
    except StartupError as exc:
        print(f"healer demo: {exc}", file=sys.stderr)
        return 2


async def _demo(args: argparse.Namespace, policy_dir: Path) -> int:
    sim = Simulator.generate(apps=args.apps, seed=args.seed, fault_rate=args.fault_rate)
    # INVALID_STATE is repaired only by a dry-run policy here: such faults would never heal,
    # pile up over a long run, and end in the fleet brake holding every app. Leave them out.
    sim.settings.fault_mix = {
        k: w for k, w in sim.settings.fault_mix.items() if k != "invalid_state"
    }
    window = args.fault_window
    if window is None:
        window = max(args.duration - DRAIN_S, args.duration / 4) if args.duration else None

    # A fresh admin token per run, shown once, so that people can try pause and resume.
    admin_token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="healer-demo-") as tmp, serve_in_thread(sim) as served:
        token_file = Path(tmp) / "admin-token"
        token_file.write_text(admin_token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        config = HealerConfig(
            cloudpilot=ClientConfig(base_url=served.base_url),
            enrollment=EnrollmentConfig(apps=sim.app_ids),
            poll_interval=timedelta(seconds=args.poll),
            policy_dir=policy_dir,
            policy_reload_interval=timedelta(seconds=5),
            store_url=args.store or f"sqlite:///{Path(tmp) / 'healer.db'}",
            http=HttpConfig(listen=f"127.0.0.1:{args.port}", admin_token=SecretStr(admin_token)),
            log=LogConfig(level=args.log_level, json=False),
            replica_id="demo",
        )
        daemon = Daemon(config)
        await daemon.start()
        print(
            f"healer demo: {args.apps} apps on {served.base_url} (simulated CloudPilot); "
            f"healer on http://127.0.0.1:{daemon.http_port} (/metrics, /v1/status); "
            f"policies from {policy_dir}",
            flush=True,
        )
        if not args.quiet:
            print(f"healer demo: admin token for POST /v1/pause and /v1/resume in {token_file}")
        started = time.monotonic()
        faults_on = True
        try:
            while True:
                elapsed = time.monotonic() - started
                if args.duration is not None and elapsed >= args.duration:
                    break
                if faults_on and window is not None and elapsed >= window:
                    sim.stop_faults()
                    faults_on = False
                    if not args.quiet:
                        print("healer demo: fault window over, letting the last faults heal")
                step = 5.0 if args.duration is None else min(5.0, args.duration - elapsed)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(daemon.wait(), timeout=max(step, 0.1))
                    break  # Ctrl-C or SIGTERM
                if not args.quiet:
                    print(_live_line(time.monotonic() - started, sim.report(), daemon), flush=True)
        finally:
            await daemon.stop()
        summary = build_summary(sim.report(), await _refusals(config), args)
    text = json.dumps(summary, indent=2, sort_keys=True)
    print(text)
    if args.summary:
        args.summary.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["unsafe_actions"] == 0 else 1


async def _refusals(config: HealerConfig) -> dict[str, int]:
    """Refusals by reason, from the ledger the demo wrote."""
    from healer.store import Store

    store = await Store.open(config.store_url)
    try:
        rows = await store.decisions(decision="refused", limit=1_000_000)
    finally:
        await store.close()
    return dict(sorted(Counter(r.reason or "?" for r in rows).items()))


def _live_line(elapsed: float, report: dict[str, Any], daemon: Daemon) -> str:
    actions = sum(sum(v.values()) for v in report["actions"].values())
    refused: Counter[str] = Counter()
    if daemon.engine and daemon.engine.last_sweep:
        for d in daemon.engine.last_sweep.decisions:
            if d.reason:
                refused[d.reason.value] += 1
    shown = ", ".join(f"{k} {v}" for k, v in sorted(refused.items())) or "none"
    return (
        f"[{elapsed:5.0f}s] faults {report['faults_injected']['total']}, "
        f"actions {actions}, healed {report['instances_healed']}, "
        f"unsafe {report['unsafe_count']}; refused in last sweep: {shown}"
    )


def build_summary(
    report: dict[str, Any], refusals: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """The demo's JSON summary, taken from the auditor (and the ledger for refusals)."""
    by_kind = report["faults_injected"]["by_kind"]
    return {
        "apps": args.apps,
        "seed": args.seed,
        "faults_injected": report["faults_injected"]["total"],
        "faults_by_kind": by_kind,
        "faults_covered": sum(by_kind.get(k, 0) for k in COVERED_FAULTS),
        "actions": report["actions"],
        "instances_healed": report["instances_healed"],
        "healed_by_action": report.get("healed_by_action", {}),
        "refusals": refusals,
        "unsafe_actions": report["unsafe_count"],
        "unsafe_details": report["unsafe_actions"][:20],
    }
