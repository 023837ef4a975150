"""Where CloudPilot is and how to talk to it: the client's configuration.

Everything that differs between the embedded simulator and the real service
lives here, so that meeting the real API is a configuration change, not a code
change (DESIGN section 1): the base URL, every path, the envelope's key names,
the auth header and its token, timeouts, connection limits, the retry policy
for queries, and the HTTP transport.

The token is a ``SecretStr``, read from an environment variable or a file when
the configuration is built. It never appears in ``repr``, in a log line or in
an error message; only the request header carries it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from healer.cloudpilot.models import Action
from healer.files import MAX_TOKEN_BYTES, read_text

#: The query calls, by their name in code (DESIGN section 1).
QUERY_CALLS: tuple[str, ...] = (
    "app_meta",
    "min_usable",
    "instance_status",
    "hard_limits",
    "disabled",
    "instance_info",
    "instance_by_addr",
    "events",
)

DEFAULT_BASE_URL = "http://127.0.0.1:8931"


def _check_token(secret: str, source: str) -> None:
    """Refuse a token that is empty or cannot go in an HTTP header; never show the token.

    A header value is printable ASCII (RFC 9110 field-value); anything else
    would fail every request as a protocol error, far from its cause.
    """
    if not secret.strip():
        raise ValueError(f"{source} is empty")
    if any(not (ch == "\t" or " " <= ch <= "~") for ch in secret):
        msg = (
            f"{source} has a character that cannot go in an HTTP header"
            " (only printable ASCII: no newline, control or non-ASCII character)"
        )
        raise ValueError(msg)


def _action_path(action: Action) -> str:
    return f"/feiyun/action/instance/{action.value}"


class Paths(BaseModel):
    """The path of every call; the defaults are the API document's (or its pattern)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_meta: str = "/res/capacity/getappmeta"
    min_usable: str = "/pandora/getappminusable"
    instance_status: str = "/feiyun/get/instance"
    hard_limits: str = "/feiyun/get/hardlimit"
    disabled: str = "/feiyun/get/disabled"
    instance_info: str = "/paas/instance/getinfo"
    instance_by_addr: str = "/shell/get/instance"
    events: str = "/alm/selfhealing/geteventlist"
    restart: str = _action_path(Action.RESTART)
    disable: str = _action_path(Action.DISABLE)
    migrate: str = _action_path(Action.MIGRATE)
    delete: str = _action_path(Action.DELETE)
    enable: str = _action_path(Action.ENABLE)
    repair: str = _action_path(Action.REPAIR)
    stop: str = _action_path(Action.STOP)
    start: str = _action_path(Action.START)
    interrupt: str = _action_path(Action.INTERRUPT)
    unfreeze: str = _action_path(Action.UNFREEZE)

    def for_call(self, call: str) -> str:
        """The path of a query by its name, or of an action by its value."""
        path: str = getattr(self, call)
        return path


class Envelope(BaseModel):
    """The key names of the ``{code, message, data}`` envelope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code_key: str = "code"
    message_key: str = "message"
    data_key: str = "data"


class ClientConfig(BaseModel):
    """How the client reaches CloudPilot. Every field has a loopback-safe default.

    The token comes from exactly one of ``token`` (given directly, e.g. from a
    secrets manager), ``token_env`` (the name of an environment variable) or
    ``token_file`` (a file holding it, trailing whitespace ignored). A named
    variable or file that is missing or empty is a configuration error, raised
    when the configuration is built, never at the first request.
    """

    # Errors never echo what was given: it may hold the token.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str = DEFAULT_BASE_URL
    paths: Paths = Field(default_factory=Paths)
    envelope: Envelope = Field(default_factory=Envelope)

    auth_header: str = "Authorization"
    #: Put before the token with a space; empty sends the token alone.
    auth_scheme: str = "Bearer"
    token: SecretStr | None = None
    token_env: str | None = None
    token_file: Path | None = None

    connect_timeout: float = Field(default=3.0, gt=0)
    read_timeout: float = Field(default=10.0, gt=0)
    #: One attempt, from asking for a connection to the last byte of the answer.
    total_timeout: float = Field(default=15.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    max_keepalive_connections: int = Field(default=32, ge=0)
    keepalive_expiry: float = Field(default=30.0, ge=0)

    #: Retries of a query after its first attempt (actions are never retried).
    query_retries: int = Field(default=2, ge=0)
    #: Backoff before retry n (0-based) is uniform in [0, min(cap, base * 2**n)].
    backoff_base: float = Field(default=0.2, ge=0)
    backoff_cap: float = Field(default=2.0, ge=0)

    #: ``native``: httpx's own pool; ``aiohttp``: the ``httpx-aiohttp`` transport.
    transport: Literal["native", "aiohttp"] = "native"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value.strip())
            parts.port  # noqa: B018 - raises ValueError on a port out of range
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
        return value.strip()

    @field_validator("token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_token(value.get_secret_value(), "the token")
        return value

    @model_validator(mode="after")
    def _load_token(self) -> ClientConfig:
        sources = [s for s in (self.token, self.token_env, self.token_file) if s is not None]
        if len(sources) > 1:
            raise ValueError("give the token by only one of token, token_env, token_file")

        # Read the token now so that a missing secret stops start-up, not the first call.
        loaded: str | None = None
        if self.token_env is not None:
            loaded = os.environ.get(self.token_env)
            if not loaded:
                raise ValueError(f"token_env names {self.token_env!r}, which is unset or empty")
        elif self.token_file is not None:
            try:
                # Bounded, and never a FIFO or a device: start-up must not hang or fill memory.
                loaded = read_text(self.token_file, MAX_TOKEN_BYTES).strip()
            except (OSError, UnicodeDecodeError) as exc:
                # The path is configuration, not a secret: naming it helps the operator.
                why = getattr(exc, "strerror", None) or str(exc)
                raise ValueError(f"token_file {str(self.token_file)!r} unreadable: {why}") from None
            if not loaded:
                raise ValueError(f"token_file {str(self.token_file)!r} is empty")
        if loaded is not None:
            _check_token(
                loaded, f"the token from {'token_env' if self.token_env else 'token_file'}"
            )
            object.__setattr__(self, "token", SecretStr(loaded))

        if self.transport == "aiohttp" and importlib.util.find_spec("httpx_aiohttp") is None:
            raise ValueError("transport 'aiohttp' needs the httpx-aiohttp package installed")

        return self

    def auth_headers(self) -> dict[str, str]:
        """The auth header to send, or nothing when no token is configured."""
        if self.token is None:
            return {}
        secret = self.token.get_secret_value()
        value = f"{self.auth_scheme} {secret}" if self.auth_scheme else secret
        return {self.auth_header: value}
