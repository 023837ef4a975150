"""The daemon's configuration: one YAML file, with ``HEALER_*`` environment overrides.

Everything healer needs to run comes from here: where CloudPilot is and how
to authenticate, which apps are enrolled, how often to poll, where policies
and the store live, where to listen, and the guard's settings. A bad file
stops start-up with a message naming the key; ``healer run`` never starts
half-configured.

Environment overrides use ``HEALER_`` and ``__`` between nested keys, e.g.
``HEALER_CLOUDPILOT__BASE_URL`` or ``HEALER_POLL_INTERVAL=30s``; they win
over the file.
"""

from __future__ import annotations

import os
import re
import socket
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from healer.cloudpilot.config import ClientConfig
from healer.files import MAX_TOKEN_BYTES, read_bounded, read_text
from healer.guard.config import GuardConfig
from healer.policy.durations import Duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def app_id_problem(text: str) -> str | None:
    """Why ``text`` cannot be an app id, or None: no blanks, quotes or invisible characters.

    Such an id is a typo or an editor's leftover (a quoted line, a zero-width
    space, a byte-order mark mid-file); enrolled as it is, it would fail every
    sweep without anyone being told why.
    """
    if not text:
        return "is empty"
    for c in text:
        if c.isspace() or c in "\"'#" or unicodedata.category(c).startswith("C"):
            return f"holds {c!r}, which no app id holds"
    return None


def _app_ids(ids: list[str]) -> list[str]:
    for n, app_id in enumerate(ids):
        problem = app_id_problem(app_id)
        if problem:
            raise ValueError(f"item {n}: {app_id!r} {problem}")
    return ids


class EnrollmentConfig(Strict):
    """Which apps healer watches: a list, a file of ids (one per line, ``#`` comments), or both."""

    apps: Annotated[list[str], AfterValidator(_app_ids)] = Field(default_factory=list)
    apps_file: Path | None = None
    reload_interval: Duration = timedelta(seconds=60)

    def read(self) -> list[str]:
        """The enrolled app ids in order, without duplicates; OSError if the file is unreadable."""
        return self.read_apps()[0]

    def read_apps(self) -> tuple[list[str], int | None]:
        """The enrolled app ids, and the apps file's size in bytes (None without a file).

        Raises OSError naming the file when it cannot be read, is not a regular
        file (a FIFO or a device would block or never end), is too large, or is
        not UTF-8 text. The size tells a file truncated to nothing (0 bytes,
        e.g. caught mid-write) from one that lists no app on purpose.
        """
        # An apps file is one id a line; anything larger is not one (and is not read whole).
        max_bytes = 4 * 1024 * 1024
        ids = list(self.apps)
        size: int | None = None
        if self.apps_file is not None:
            path = self.apps_file
            data = read_bounded(path, max_bytes)
            if len(data) > max_bytes:
                raise OSError(f"{path}: larger than {max_bytes // 2**20} MiB, not an apps file")
            size = len(data)
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                at = data[: exc.start].count(b"\n") + 1
                raise OSError(f"{path}:{at}: not UTF-8 text") from None
            for n, line in enumerate(text.splitlines(), 1):
                # A comment starts a line or follows a blank: `app#1` is an id gone wrong.
                line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
                if any(c.isspace() for c in line):
                    # Two ids on a line, or one with a space in it: either way a typo.
                    raise OSError(f"{path}:{n}: {line!r} is not one app id (one id a line)")
                problem = app_id_problem(line) if line else None
                if problem:
                    raise OSError(f"{path}:{n}: {line!r} {problem}")
                if line:
                    ids.append(line)
        return list(dict.fromkeys(ids)), size


class HttpConfig(Strict):
    """healer's own HTTP server: metrics, health, status and the admin API."""

    listen: str = "127.0.0.1:8080"
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    admin_token_env: str | None = None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @model_validator(mode="after")
    def _listen_has_port(self) -> HttpConfig:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"http.listen must be HOST:PORT, got {self.listen!r}")
        return self

    def resolved_admin_token(self) -> SecretStr | None:
        """The admin token from the value, the file or the environment variable, in that order.

        None when no source is configured (the admin API is off). A source that is
        configured but yields nothing raises ValueError naming the key: an admin API
        that is quietly off is found out mid-incident, when a pause fails.
        """
        if self.admin_token is not None:
            token, where = self.admin_token.get_secret_value(), "http.admin_token"
        elif self.admin_token_file is not None:
            where = f"http.admin_token_file: {self.admin_token_file}"
            try:
                # Bounded, and never a FIFO or a device: start-up must not hang or fill memory.
                token = read_text(self.admin_token_file, MAX_TOKEN_BYTES)
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{where}: cannot read: {exc}") from None
        elif self.admin_token_env is not None:
            token = os.environ.get(self.admin_token_env, "") if self.admin_token_env else ""
            where = f"http.admin_token_env: {self.admin_token_env!r}"
        else:
            return None
        token = token.strip()
        if not token:
            raise ValueError(f"{where} is empty or unset")
        if any(c.isspace() for c in token):
            # A second line or a space would be sent by nobody: every write would get 401.
            raise ValueError(f"{where}: a token is one word; this one holds whitespace")
        return SecretStr(token)


class CacheConfig(Strict):
    """How long slow-changing pieces of a snapshot are reused."""

    meta_ttl: Duration = timedelta(minutes=5)
    budget_ttl: Duration = timedelta(seconds=60)
    address_ttl: Duration = timedelta(minutes=10)


#: A configuration file is a page of keys; anything far larger is not one.
MAX_CONFIG_BYTES = 1024 * 1024

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class LogConfig(Strict):
    level: str = "info"
    json_lines: bool = Field(default=True, alias="json")

    @field_validator("level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        if v.lower() not in LOG_LEVELS:
            raise ValueError(f"unknown log level {v!r}; use one of {', '.join(LOG_LEVELS)}")
        return v.lower()


class HealerConfig(BaseSettings):
    """The whole configuration of one healer process."""

    model_config = SettingsConfigDict(
        env_prefix="HEALER_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
    )

    cloudpilot: ClientConfig = Field(default_factory=ClientConfig)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    poll_interval: Duration = timedelta(seconds=10)
    observe_spread: float = Field(default=0.5, ge=0.0, le=0.9)
    concurrency: int = Field(default=32, ge=1, le=1024)
    policy_dir: Path = Path("policies")
    policy_reload_interval: Duration = timedelta(seconds=15)
    store_url: str = "sqlite:///healer.db"
    http: HttpConfig = Field(default_factory=HttpConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    replica_id: str = Field(default_factory=socket.gethostname)
    retention: Duration = timedelta(days=14)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file: deployments patch single keys that way.
        return (env_settings, init_settings)

    @field_validator("poll_interval", "policy_reload_interval")
    @classmethod
    def _positive_interval(cls, v: timedelta) -> timedelta:
        # Checked on the field, so that the error names the key (and its variable).
        if v <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return v


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key."""


def load_config(path: Path | None, **overrides: Any) -> HealerConfig:
    """Read the YAML file (if any), apply environment and keyword overrides, validate.

    Raises ConfigError naming every bad key, so that a daemon never starts
    half-configured.
    """

    from pydantic_settings import SettingsError
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    data: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        try:
            # Bounded, and never a FIFO or a device: start-up must not hang or fill memory.
            text = read_text(path, MAX_CONFIG_BYTES)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            msg = f"{where}: not UTF-8 text (byte {exc.start} cannot be decoded)"
            raise ConfigError(msg) from None
        try:
            loaded = YAML(typ="safe").load(text)
        except RecursionError:
            raise ConfigError(f"{where}: nested too deeply to be a configuration") from None
        except MarkedYAMLError as exc:
            # file:line:col and what the parser saw, without ruamel's own help text.
            mark = exc.problem_mark or exc.context_mark
            at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
            what = exc.problem or exc.context or "cannot parse"
            raise ConfigError(f"{at}: not valid YAML: {what}") from None
        except YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of keys")
        odd = [k for k in loaded if not isinstance(k, str)]
        if odd:
            raise ConfigError(f"{where}: key {odd[0]!r} must be text")
        data = loaded
    data.update(overrides)
    try:
        return HealerConfig(**data)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a configuration") from None
    except SettingsError as exc:
        # pydantic-settings reads a nested key's variable (HEALER_GUARD,
        # HEALER_ENROLLMENT__APPS) as JSON and names only the top-level field.
        found = re.search(r'field "([^"]+)"', str(exc))
        field = found.group(1) if found else ""
        prefix = f"HEALER_{field}".upper()
        names = sorted(
            n for n in os.environ if n.upper() == prefix or n.upper().startswith(prefix + "__")
        )
        shown = ", ".join(names) or f"a HEALER_ variable for {field or 'a key'}"
        msg = (
            f"environment {shown}: cannot be read: list and map values must be JSON,"
            ' like ["app-0001", "app-0002"] or {"max_in_flight": 2}'
        )
        raise ConfigError(msg) from None
    except ValidationError as exc:
        lines = [f"{where}: invalid configuration:"]
        env = {n.upper(): n for n in os.environ}
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            # A value from the environment overrides the file's: name the variable to fix.
            parts = [str(p).upper() for p in err["loc"]]
            names = ["HEALER_" + "__".join(parts[:n]) for n in range(len(parts), 0, -1)]
            source = next((env[n] for n in names if n in env), None)
            origin = f" (from the environment: {source})" if source else ""
            lines.append(f"  {key}: {err['msg']}{origin}")
        raise ConfigError("\n".join(lines)) from exc
