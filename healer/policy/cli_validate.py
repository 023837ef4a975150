"""``healer validate PATH...``: check policy files the way the daemon will load them.

Prints every error as ``file:line:col: message`` and exits 1, or prints a
one-line summary and exits 0. Directories are read as the daemon reads its
policy directory: their ``*.yaml``/``*.yml`` files, not subdirectories.
"""

from __future__ import annotations

import argparse
import sys

from healer.policy.loader import load_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="policy files or directories")


def run(args: argparse.Namespace) -> int:
    result = load_paths(args.paths)
    if not result.ok:
        for error in result.errors:
            print(error)
        files = len({e.file for e in result.errors})
        noun = "error" if len(result.errors) == 1 else "errors"
        print(
            f"{len(result.errors)} {noun} in {files} of {len(result.files)} files", file=sys.stderr
        )
        return 1

    enabled = sum(p.enabled for p in result.policies)
    dry = sum(p.enabled and p.dry_run for p in result.policies)
    print(
        f"ok: {len(result.policies)} policies in {len(result.files)} files "
        f"({enabled} enabled, {dry} of them dry-run)"
    )
    return 0
