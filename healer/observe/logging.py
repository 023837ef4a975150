"""Logging setup: one JSON line per event, and never a secret.

Every part of healer logs through structlog with a constant snake_case event
name and key-value fields (``app_id``, ``policy``, ``action``,
``instance_id``, ``reason``). :func:`configure_logging` is called once at
start-up by the ``healer`` commands. It routes structlog *and* the standard
library's ``logging`` (uvicorn, APScheduler, SQLAlchemy) through the same
processors, so that every line has the same shape::

    {"event": "action_issued", "app_id": "web-1", "level": "info",
     "timestamp": "2026-12-03T19:04:21.120Z", "logger": "healer.engine"}

The last processor before rendering redacts secrets: any field whose name
says it holds a token, password, secret or authorization header, at any
depth, and any ``Bearer ...``/``Basic ...`` credential inside a string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

#: Words that, as a part of a field name (split on ``_``, ``-`` and ``.``), mark a secret.
SECRET_WORDS: frozenset[str] = frozenset(
    {"token", "password", "passwd", "authorization", "secret", "apikey", "cookie"}
)

#: A field name ending in one of these names *where* a secret lives, not the secret.
_REFERENCE_SUFFIXES: frozenset[str] = frozenset({"file", "path", "env"})

#: Loggers that libraries configure with handlers of their own. uvicorn does so when started
#: with its default ``log_config``; start it with ``log_config=None`` after configure_logging.
OWN_HANDLER_LOGGERS: tuple[str, ...] = ("uvicorn", "uvicorn.error", "uvicorn.access")

_CREDENTIAL_IN_TEXT = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")

#: Libraries that log every request or job run at INFO: at one line per CloudPilot call, per
#: probe or per app cycle they would drown healer's own events. Their warnings still pass.
#: (uvicorn logs here only when started with ``log_config=None``.)
QUIET_LOGGERS: tuple[str, ...] = (
    "httpx",
    "httpcore",
    "hpack",
    "aiosqlite",
    "uvicorn.access",
    "apscheduler",
)


def is_secret_key(key: str) -> bool:
    """Whether a field called ``key`` holds a secret (``admin_token`` yes, ``token_file`` no)."""
    words = [w for w in re.split(r"[_\-.\s]+", key.lower()) if w]
    if not words or words[-1] in _REFERENCE_SUFFIXES:
        return False
    if "api" in words and "key" in words:
        return True

    return any(w in SECRET_WORDS for w in words)


def redact(value: Any) -> Any:
    """``value`` with secrets replaced, looking into dicts, lists and strings."""
    if isinstance(value, str):
        return _CREDENTIAL_IN_TEXT.sub(lambda m: f"{m.group(1)} {REDACTED}", value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)

    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: redact every secret in the event before it is rendered."""
    for key in list(event_dict):
        if is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(event_dict[key])

    return event_dict


def configure_logging(
    level: str | int = "info", json: bool = True, stream: TextIO | None = None
) -> None:
    """Send structlog and stdlib logging, as JSON lines (or console text), to ``stream``.

    Args:
        level: the lowest level logged (``debug``, ``info``, ``warning``, ...).
        json: JSON lines for machines; ``False`` gives aligned text for people (the demo).
        stream: where lines go; ``sys.stderr`` by default.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        message = f"unknown log level {level!r}"
        raise ValueError(message)

    # Shared by structlog events and stdlib records, before rendering.
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        timestamper,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: tests reconfigure (capture_logs) after loggers were first used.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Render tracebacks first, so that the redaction sees their text too.
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("healer")

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "healer":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)

    # Loggers that a library gave handlers and levels of its own (uvicorn's default config)
    # would print their own format and skip ours: send them through the root handler instead.
    for name in OWN_HANDLER_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
        library_logger.setLevel(logging.NOTSET)

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))
