"""``healer history --config FILE [--app ID] [--since 1h]``: the action ledger, newest first."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from healer.config import ConfigError, load_config
from healer.daemon.cli_plan import print_table
from healer.daemon.service import action_json
from healer.observe.logging import configure_logging
from healer.policy.durations import DurationError, parse_duration
from healer.store import Store
from healer.store.errors import StoreConfigError
from healer.store.store import sqlite_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the YAML configuration file")
    parser.add_argument("--app", help="only this app")
    parser.add_argument("--policy", help="only this policy")
    parser.add_argument("--since", default="24h", help="how far back (default 24h)")
    parser.add_argument("--limit", type=_positive_int, default=200, help="at most this many (200)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        since = datetime.now(UTC) - parse_duration(args.since)
    except ConfigError as exc:
        print(f"healer history: {exc}", file=sys.stderr)
        return 2
    except DurationError as exc:
        print(f"healer history: --since: {exc}", file=sys.stderr)
        return 2

    # Logs go to stderr and only when something is wrong: stdout is the ledger.
    configure_logging("warning", json=False)

    # Reading the history must not create a ledger: a missing file is a wrong store_url.
    try:
        database = sqlite_file(config.store_url)
    except StoreConfigError as exc:
        print(f"healer history: store_url: {exc}", file=sys.stderr)
        return 2
    if database is not None and not database.is_file():
        print(f"healer history: store_url: no ledger at {database}", file=sys.stderr)
        return 2

    async def main() -> list[dict[str, object]] | None:
        try:
            store = await Store.open(config.store_url)
        except Exception as exc:
            # Whatever the driver raised, name the setting to fix (as healer run does).
            print(f"healer history: store_url: cannot open the store: {exc}", file=sys.stderr)
            return None
        try:
            rows = await store.actions(
                app_id=args.app, policy=args.policy, since=since, limit=args.limit
            )
        finally:
            await store.close()
        return [action_json(r) for r in rows]

    records = asyncio.run(main())
    if records is None:
        return 2
    try:
        _print(records, json_lines=args.json)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (``healer history --json | head``): nothing more to say.
        # stdout goes to /dev/null so that the flush at exit does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _print(records: list[dict[str, object]], *, json_lines: bool) -> None:
    if json_lines:
        for r in records:
            print(json.dumps(r, sort_keys=True))
        return
    rows = [
        [
            str(r["issued_at"]),
            str(r["app_id"]),
            str(r["instance_id"]),
            str(r["policy"]),
            str(r["action"]),
            str(r["outcome"]),
            str(r["detail"] or ""),
        ]
        for r in records
    ]
    print_table(["ISSUED", "APP", "INSTANCE", "POLICY", "ACTION", "OUTCOME", "DETAIL"], rows)
