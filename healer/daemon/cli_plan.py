"""``healer plan --config FILE [--app ID]``: one look, and what healer would do, as a table.

Nothing is executed and nothing is written: the snapshot, the policies and
the guard run exactly as in a sweep, against the ledger as it stands. An SQLite
ledger that does not exist yet is not created: plan runs against an empty
ledger in memory instead. (An existing store is opened as ``healer run`` opens
it, so a store written by an older healer is migrated.)

An app that could not be observed is listed with the reason, and makes the
exit status 1: a plan that looked at nothing must not read as "nothing to do".
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
from healer.snapshot import AppSnapshot
from healer.store import Store
from healer.store.errors import StoreConfigError
from healer.store.store import sqlite_file

DESCRIPTION = """\
Observe the enrolled apps once and show what healer would do, as a table:
each decision with its arithmetic, and each app that could not be observed
with the reason. Nothing is executed and nothing is written. The ledger
(store_url) is read as it stands; an SQLite file that does not exist is not
created, and the plan is made against an empty ledger instead.

Exit status: 0 when every app was observed, 1 when any app could not be
observed (or the policies have errors), 2 on a configuration error."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", type=Path, required=True, help="the YAML configuration file")
    parser.add_argument("--app", action="append", help="only this app (repeatable)")


def ledger_url(store_url: str) -> tuple[str, str | None]:
    """The store URL plan opens, and a note when that is not ``store_url`` itself.

    An SQLite file that does not exist yet becomes an empty in-memory ledger,
    so that looking never creates a database. Raises StoreConfigError for a URL
    that is not a store's.
    """
    database = sqlite_file(store_url)
    if database is None or database.exists():
        return store_url, None
    return "sqlite:///:memory:", f"no ledger at {database} yet: planning against an empty ledger"


def skipped_detail(snap: AppSnapshot) -> str:
    """Why an app could not be observed: each failed piece with CloudPilot's error."""
    parts = []
    for piece in snap.missing:
        error = snap.errors.get(piece)
        parts.append(f"{piece}: {error}" if error else piece)
    return "; ".join(parts) or "not observed"


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
    try:
        url, note = ledger_url(config.store_url)
    except StoreConfigError as exc:
        print(f"healer plan: store_url: {exc}", file=sys.stderr)
        return 2
    if note:
        print(f"healer plan: {note}", file=sys.stderr)

    async def open_store() -> Store | None:
        try:
            return await Store.open(url)
        except Exception as exc:
            # Whatever the driver raised, name the setting to fix (as healer run does).
            print(f"healer plan: store_url: cannot open the store: {exc}", file=sys.stderr)
            return None

    skipped: list[str] = []

    async def main() -> list[list[str]] | None:
        metrics = HealerMetrics()
        calls = request_counter(metrics)
        store = await open_store()
        if store is None:
            return None
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
                skipped.append(app_id)
                detail = skipped_detail(snap)
                rows.append([app_id, "-", "-", "-", "skipped", "stale_snapshot", detail])
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
    if rows is None:
        return 2
    # DETAIL is a decision's arithmetic, or why an app could not be observed.
    header = ["APP", "INSTANCE", "POLICY", "ACTION", "DECISION", "REASON", "DETAIL"]
    print_table(header, rows)
    if skipped:
        print(f"{len(skipped)} of {len(apps)} app(s) could not be observed", file=sys.stderr)
        return 1
    if not rows:
        print(f"nothing to do for {len(apps)} app(s)")
    return 0


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; the last column is left as it is."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        print("  ".join([*cells, str(r[-1])]).rstrip())
