"""The ``healer`` command: one entry point, one subcommand per job.

Each subcommand lives beside the code it drives, in a module that offers
``add_arguments(parser)`` and ``run(args) -> int``; this file only names them,
so that ``healer --help`` stays cheap and a broken extra never blocks the rest.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from healer import __version__

#: name → (module offering add_arguments/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("healer.daemon.cli_run", "run the daemon"),
    "demo": ("healer.daemon.cli_demo", "run the simulator and the daemon healing it"),
    "plan": ("healer.daemon.cli_plan", "evaluate once and show what would be done"),
    "history": ("healer.daemon.cli_history", "show the action ledger"),
    "simulate": ("healer.simulator.cli", "serve a simulated CloudPilot on loopback"),
    "validate": ("healer.policy.cli_validate", "check policy files"),
    "schema": ("healer.policy.cli_schema", "print the JSON Schema of a policy file"),
    "test": ("healer.cases.cli_test", "run policy test cases"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healer", description="healer: self-healing for CloudPilot apps"
    )
    parser.add_argument("--version", action="version", version=f"healer {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subs.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A subcommand whose module is not built yet says so when run.
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            sub.set_defaults(_missing=module_name)
            continue
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"healer {args.command}: not available ({args._missing} missing)", file=sys.stderr)
        return 2
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
