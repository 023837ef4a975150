"""Shared fixtures: the PostgreSQL DSN for store tests, loopback helpers, and a log stream."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_DSN = os.environ.get("HEALER_TEST_PG_DSN", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_or_skip(available: bool, reason: str) -> None:
    """Skip when a system part is missing, but fail under CI=true, where it must be there."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The PostgreSQL DSN for tests; skips (or fails under CI) when the server is not reachable."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_DSN)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        ok = True
    except Exception as exc:  # any failure to connect means: no server here
        reason = f"PostgreSQL not reachable at {PG_DSN}: {exc.__class__.__name__}"
        ok = False
    require_or_skip(ok, reason if not ok else "")
    return PG_DSN


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """A stream to log into; logging, structlog and the secret registry are put back after."""
    from healer.observe.logging import QUIET_LOGGERS, clear_secrets

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    clear_secrets()

    yield io.StringIO()

    clear_secrets()
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    """The JSON log lines written to ``buf``."""
    return [json.loads(line) for line in buf.getvalue().splitlines()]
