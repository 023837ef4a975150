"""``healer schema``: print the JSON Schema (draft 2020-12) of a policy file.

Editors use it to check policy files as they are typed; see the README.
"""

from __future__ import annotations

import argparse
import sys

from healer.policy.schema import policy_schema_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the schema to FILE instead of stdout"
    )


def run(args: argparse.Namespace) -> int:
    text = policy_schema_text()
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            print(f"healer schema: -o {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0
