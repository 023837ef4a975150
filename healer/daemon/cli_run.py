"""``healer run --config FILE``: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from healer.config import ConfigError, load_config
from healer.daemon.service import Daemon, StartupError
from healer.observe.logging import configure_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="the YAML configuration file")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"healer run: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, json=config.log.json_lines)

    async def main() -> None:
        daemon = Daemon(config)
        await daemon.start()
        try:
            await daemon.wait()
        finally:
            await daemon.stop()

    try:
        asyncio.run(main())
    except StartupError as exc:
        print(f"healer run: {exc}", file=sys.stderr)
        return 2
    return 0
