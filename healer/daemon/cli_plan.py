"""``healer plan --config FILE [--app ID]``: one look, and what healer would do, as a table.

Nothing is executed and nothing is written: the snapshot, the policies and
the guard run exactly as in a sweep, against the ledger as it stands.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from healer.cloudpilot.client import CloudPilotClient
from healer.config import ConfigError, load_config
from healer.engine.engine import Engine, request_counter
from healer.observe.logging import configure_logging
from healer.observe.metrics import HealerMetrics
from healer.policy.loader import load_directory
from healer.store import Store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the YAML configuration file")
    parser.add_argument("--app", action="append", help="only this app (repeatable)")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"healer plan: {exc}", file=sys.stderr)
        return 2
    configure_logging("error", json=False)
    loaded = load_directory(config.policy_dir)
    if not loaded.ok:
        for err in loaded.errors:
            print(err, file=sys.stderr)
        return 1
    try:
        apps = args.app or config.enrollment.read()
    except OSError as exc:
        print(f"healer plan: enrollment.apps_file: {exc}", file=sys.stderr)
        return 2

    async def main() -> list[list[str]]:
        metrics = HealerMetrics()
        calls = request_counter(metrics)
        store = await Store.open(config.store_url)
        try:
            async with CloudPilotClient(config.cloudpilot, on_request=calls) as client:
                engine = Engine(
                    client=client,
                    store=store,
                    guard=config.guard,
                    metrics=metrics,
                    calls=calls,
                    poll_interval=config.poll_interval,
                    observe_spread=0.0,
                    concurrency=config.concurrency,
                    replica_id=config.replica_id,
                )
                engine.policies = list(loaded.policies)
                await engine.start()
                result = await engine.sweep(apps, execute=False)
        finally:
            await store.close()
        rows = []
        for app_id, snap in sorted(result.snapshots.items()):
            if not snap.complete:
                missing = ",".join(snap.missing)
                rows.append([app_id, "-", "-", "-", "skipped", "stale_snapshot", missing])
        for d in result.decisions:
            p = d.proposal
            a = d.arithmetic
            arith = (
                f"R={a.R} required={a.required} available={a.available} "
                f"cost={a.cost} spent={a.spent_before} in_flight={a.in_flight}"
                if a
                else ""
            )
            reason = d.reason.value if d.reason else ""
            rows.append(
                [
                    p.app_id,
                    p.instance_id,
                    p.policy.name,
                    p.action.value,
                    d.outcome.value,
                    reason,
                    arith,
                ]
            )
        return rows

    rows = asyncio.run(main())
    header = ["APP", "INSTANCE", "POLICY", "ACTION", "DECISION", "REASON", "ARITHMETIC"]
    print_table(header, rows)
    if not rows:
        print(f"nothing to do for {len(apps)} app(s)")
    return 0


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; the last column is left as it is."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        print("  ".join([*cells, str(r[-1])]).rstrip())
