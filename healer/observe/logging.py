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
depth; any ``Bearer ...``/``Basic ...`` credential (or ``<scheme> ...`` for a
scheme given to :func:`register_auth_scheme`) inside a string; and any value
given to :func:`register_secret` wherever it appears, in any string field,
in the text of an object logged as a field, and in rendered tracebacks. The
parts that load secrets register them (the CloudPilot client its token, the
daemon the admin token), so that a CloudPilot error message echoing the
token, or a header quoted in an exception, never reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
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

#: Registered secrets shorter than this are ignored: redacting "abc" everywhere would
#: mangle ordinary text and hide nothing worth hiding.
MIN_SECRET_LENGTH = 6


class _Registry:
    """The secret values and extra auth schemes to redact, as compiled patterns.

    Written rarely (at start-up), read on every log line: readers take the
    current tuple of patterns without a lock; writers rebuild it under one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._schemes: set[str] = set()
        self.secrets: re.Pattern[str] | None = None
        self.schemes: re.Pattern[str] | None = None

    def add_secret(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH:
            return
        # The value as written, and as it appears inside a Python repr (an exception's args).
        variants = {value, repr(value)[1:-1]}
        with self._lock:
            if variants <= self._secrets:
                return
            self._secrets |= variants
            # Longest first, so that a secret containing another is replaced whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self.secrets = re.compile("|".join(re.escape(v) for v in ordered))

    def add_scheme(self, scheme: str) -> None:
        scheme = scheme.strip()
        if not scheme or scheme.lower() in ("bearer", "basic"):
            return
        with self._lock:
            self._schemes.add(scheme)
            names = "|".join(re.escape(s) for s in sorted(self._schemes, key=len, reverse=True))
            self.schemes = re.compile(rf"(?<![\w-])({names})\s+[A-Za-z0-9\-._~+/]+=*")

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._schemes.clear()
            self.secrets = self.schemes = None


_REGISTRY = _Registry()


def register_secret(value: str | None) -> None:
    """Redact ``value`` wherever it appears in a log line from now on.

    Values shorter than :data:`MIN_SECRET_LENGTH` (after stripping) are ignored.
    """
    if value:
        _REGISTRY.add_secret(value)


def register_auth_scheme(scheme: str | None) -> None:
    """Redact ``<scheme> <credential>`` inside text, as ``Bearer``/``Basic`` always are."""
    if scheme:
        _REGISTRY.add_scheme(scheme)


def clear_secrets() -> None:
    """Forget every registered secret and scheme (for tests)."""
    _REGISTRY.clear()


def redact_text(text: str) -> str:
    """``text`` with registered secrets and credentials after an auth scheme replaced."""
    secrets = _REGISTRY.secrets
    if secrets is not None:
        text = secrets.sub(REDACTED, text)
    text = _CREDENTIAL_IN_TEXT.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    schemes = _REGISTRY.schemes
    if schemes is not None:
        text = schemes.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return text


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
    """``value`` with secrets replaced, looking into dicts, lists and strings.

    Any other object (an exception passed as a field, say) is kept as it is
    unless its text holds a secret; then it becomes that text, redacted.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            redact(k): REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(redact(v) for v in value)
    if value is None or isinstance(value, bool | int | float):
        return value

    # Renderers show other objects by repr (JSON) or str: check both.
    try:
        texts = (repr(value), str(value))
    except Exception:
        return value
    for text in texts:
        if redact_text(text) != text:
            return redact_text(texts[1])
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
