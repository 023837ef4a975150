"""``healer test``: run policy test cases, the way ``promtool test rules`` runs alert rules.

Each case runs through the daemon's own engine, client and store, with
CloudPilot answered in-process; see ``casefile.py``. The output
names each failing case with expected against actual decisions and ends
with ``N passed, N failed``; the exit status is 1 on any failure, and when a
file or directory given holds no case at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from healer.cases.casefile import run_files
from healer.config import LOG_LEVELS
from healer.observe.logging import configure_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "cases", nargs="+", metavar="CASE.yaml", help="case files, or directories of them"
    )
    parser.add_argument(
        "--policies",
        metavar="DIR",
        type=Path,
        default=None,
        help="policy directory for cases that name policies "
        "(default: the parent of a tests/ directory, else ./policies)",
    )
    parser.add_argument(
        "--log-level",
        default="error",
        choices=LOG_LEVELS,
        help="the engine's log level while cases run (error)",
    )


def _files(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in args:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            out.append(path)
    return out


def run(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=False)
    if args.policies is not None and not args.policies.is_dir():
        print(f"healer test: --policies: {args.policies} is not a directory", file=sys.stderr)
        return 2
    files = {raw: _files([raw]) for raw in args.cases}
    results = asyncio.run(run_files([f for fs in files.values() for f in fs], args.policies))
    # A path that holds no case is an error, not a pass: a typo would otherwise test nothing.
    sources = {r.source for r in results}
    empty = [raw for raw, fs in files.items() if not sources.intersection(str(f) for f in fs)]
    for raw in empty:
        print(f"healer test: no cases found in {raw}", file=sys.stderr)
    passed = sum(1 for r in results if r.ok)
    failed = len(results) - passed
    for r in results:
        if not r.ok:
            print(f"FAILED {r.source}: {r.name}")
            for failure in r.failures:
                print(failure)
    print(f"{passed} passed, {failed} failed")
    sys.stdout.flush()
    return 1 if failed or empty else 0
