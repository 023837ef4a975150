"""healer's one HTTP server: metrics, health, status, the ledger and the admin API.

Reads (``/metrics``, ``/healthz``, ``/readyz``, ``/v1/status``,
``/v1/actions``, ``GET /v1/pauses``, ``GET /v1/silences``) are open, like any exporter's. Writes
(``/v1/pause``, ``/v1/resume``, ``/v1/policies/{name}/resume``,
``POST /v1/silences``, ``DELETE /v1/silences/{id}``) need the admin bearer
token; without one configured they are switched off (403), never open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from healer.policy.durations import DurationError, parse_duration
from healer.policy.model import Select
from healer.store import Outcome

log = structlog.get_logger("healer.http")

M = TypeVar("M", bound=BaseModel)


class Backend(Protocol):
    """What the HTTP server asks of the daemon."""

    def ready(self) -> bool: ...

    def alive(self) -> bool: ...

    def status(self, app_id: str | None) -> dict[str, Any]: ...

    async def actions(self, **filters: Any) -> list[dict[str, Any]]: ...

    async def pause(
        self, app_id: str | None, who: str, why: str, until: datetime
    ) -> dict[str, Any]: ...

    async def pauses(self) -> list[dict[str, Any]]: ...

    async def resume(self, app_id: str | None, who: str) -> dict[str, Any]: ...

    async def resume_policy(self, name: str, who: str) -> dict[str, Any]: ...

    async def add_silence(
        self, select: Select, who: str, why: str, start: datetime, until: datetime, tz: str
    ) -> dict[str, Any]: ...

    async def silences(self) -> list[dict[str, Any]]: ...

    async def remove_silence(self, silence_id: int, who: str) -> dict[str, Any]: ...

    def render_metrics(self) -> tuple[bytes, str]: ...

    def enrolled(self, app_id: str) -> bool: ...


class WhoRequest(BaseModel):
    """An admin write that only says who made it."""

    model_config = ConfigDict(extra="forbid")

    who: str = Field(min_length=1, max_length=200)

    @field_validator("who", "why", check_fields=False)
    @classmethod
    def _not_blank(cls, v: str) -> str:
        # Who and why are read by the next person on call: blanks tell them nothing.
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


class ExpiringRequest(WhoRequest):
    """An admin write that lasts a while: why, and ``for`` (``2h``) or ``until`` (ISO time)."""

    why: str = Field(min_length=1, max_length=2000)
    duration: str | None = Field(default=None, alias="for")
    until: datetime | None = None

    @model_validator(mode="after")
    def _one_expiry(self) -> ExpiringRequest:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of 'for' (e.g. 2h) and 'until' (an ISO time)")
        return self

    def expiry(self, now: datetime, zone: ZoneInfo | None = None) -> datetime:
        """When it ends; a naive ``until`` is read in ``zone`` (UTC by default)."""
        if self.until is not None:
            until = self.until if self.until.tzinfo else self.until.replace(tzinfo=zone or UTC)
            return until
        assert self.duration is not None
        return now + parse_duration(self.duration)


#: An app id in an admin body: absent means every app, so an empty one is an error, not "all".
AppId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")]


class PauseRequest(ExpiringRequest):
    """Body of ``POST /v1/pause``: global when ``app_id`` is absent; the app must be enrolled."""

    app_id: AppId | None = None


class ResumeRequest(WhoRequest):
    app_id: AppId | None = None


class SilenceRequest(ExpiringRequest):
    """Body of ``POST /v1/silences``: the apps a policy with this ``select`` would apply to.

    ``select`` is required (``{}`` silences every app); a naive ``until`` is
    read in ``timezone``.
    """

    select: Select
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


MAX_PAUSE = timedelta(days=7)

#: The largest id the store hands out (a signed 64-bit integer on both backends).
MAX_ID = 2**63 - 1

#: The values ``GET /v1/actions?outcome=`` accepts.
OUTCOMES = tuple(o.value for o in Outcome)


def _error(
    status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def build_http_app(
    backend: Backend,
    admin_token: SecretStr | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    """The Starlette app serving ``backend``; ``admin_token`` guards every write."""

    def authorized(request: Request) -> Response | None:
        if admin_token is None or not admin_token.get_secret_value():
            return _error(403, "admin API disabled: no admin token configured")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        expected = admin_token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            log.warning("admin_unauthorized", path=request.url.path)
            return _error(401, "missing or wrong bearer token")
        return None

    async def admin_body(request: Request, model: type[M]) -> M | Response:
        """The validated body of an admin write, or the response refusing it."""
        if (denied := authorized(request)) is not None:
            return denied
        try:
            raw = await request.json()
        except (ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the parser goes is no admin body either.
            return _error(400, "body must be JSON")
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "error": e["msg"]}
                for e in exc.errors()
            ]
            return _error(422, "invalid body", fields=fields)

    async def metrics(request: Request) -> Response:
        body, content_type = backend.render_metrics()
        return Response(body, media_type=content_type)

    async def healthz(request: Request) -> Response:
        if backend.alive():
            return JSONResponse({"status": "ok"})
        return _error(503, "scheduler not running")

    async def readyz(request: Request) -> Response:
        if backend.ready():
            return JSONResponse({"status": "ready"})
        return _error(503, "no complete sweep yet")

    async def status(request: Request) -> Response:
        app_id = request.query_params.get("app")
        result = backend.status(app_id)
        if app_id and not result.get("apps"):
            return _error(404, f"app {app_id!r} is not enrolled or not yet observed")
        return JSONResponse(result)

    async def actions(request: Request) -> Response:
        q = request.query_params
        filters: dict[str, Any] = {}
        for key in ("app", "policy", "outcome"):
            if q.get(key):
                filters[key] = q[key]
        if "outcome" in filters and filters["outcome"] not in OUTCOMES:
            valid = ", ".join(OUTCOMES)
            return _error(400, f"outcome: {filters['outcome']!r} is not one of {valid}")
        if q.get("since"):
            try:
                filters["since"] = now() - parse_duration(q["since"])
            except DurationError as exc:
                return _error(400, f"since: {exc}")
        try:
            limit = int(q.get("limit", "200"))
        except ValueError:
            return _error(400, "limit: must be a whole number")
        if limit < 1:
            return _error(400, "limit: must be at least 1")
        filters["limit"] = min(limit, 5000)
        return JSONResponse({"actions": await backend.actions(**filters)})

    def expiry(
        body: ExpiringRequest, start: datetime, zone: ZoneInfo | None = None
    ) -> datetime | Response:
        """When a pause or silence ends, or the 422 refusing it."""
        field = "for" if body.duration is not None else "until"
        try:
            until = body.expiry(start, zone)
        except DurationError as exc:
            return _error(422, "invalid body", fields=[{"field": "for", "error": str(exc)}])
        if until <= start:
            error = "must be longer than 0s" if field == "for" else "in the past"
            return _error(422, "invalid body", fields=[{"field": field, "error": error}])
        if until - start > MAX_PAUSE:
            # A forgotten pause or silence quietly turns healing off; make people renew long ones.
            return _error(422, "invalid body", fields=[{"field": field, "error": "at most 7d"}])
        return until

    async def pause(request: Request) -> Response:
        body = await admin_body(request, PauseRequest)
        if isinstance(body, Response):
            return body
        until = expiry(body, now())
        if isinstance(until, Response):
            return until
        if body.app_id is not None and not backend.enrolled(body.app_id):
            # A mistyped app id must not look like a pause that took.
            field = [{"field": "app_id", "error": f"{body.app_id!r} is not an enrolled app"}]
            return _error(422, "invalid body", fields=field)
        # Logged by the store as `pause_added`.
        result = await backend.pause(body.app_id, body.who, body.why, until)
        return JSONResponse(result)

    async def list_pauses(request: Request) -> Response:
        return JSONResponse({"pauses": await backend.pauses()})

    async def resume(request: Request) -> Response:
        body = await admin_body(request, ResumeRequest)
        if isinstance(body, Response):
            return body
        result = await backend.resume(body.app_id, body.who)
        log.info("resumed", app_id=body.app_id or "*", who=body.who)
        return JSONResponse(result)

    async def resume_policy(request: Request) -> Response:
        body = await admin_body(request, ResumeRequest)
        if isinstance(body, Response):
            return body
        name = request.path_params["name"]
        result = await backend.resume_policy(name, body.who)
        if not result.get("resumed"):
            # Unknown names land here too: nothing to resume either way.
            return _error(404, f"policy {name!r} is not suspended")
        log.info("policy_resumed", policy=name, who=body.who)
        return JSONResponse(result)

    async def add_silence(request: Request) -> Response:
        body = await admin_body(request, SilenceRequest)
        if isinstance(body, Response):
            return body
        start = now()
        until = expiry(body, start, ZoneInfo(body.timezone))
        if isinstance(until, Response):
            return until
        # Logged by the store as `silence_added`, with the selector.
        result = await backend.add_silence(
            body.select, body.who, body.why, start, until, body.timezone
        )
        return JSONResponse(result)

    async def list_silences(request: Request) -> Response:
        return JSONResponse({"silences": await backend.silences()})

    async def remove_silence(request: Request) -> Response:
        body = await admin_body(request, WhoRequest)
        if isinstance(body, Response):
            return body
        text = request.path_params["silence_id"]
        # Parsed here, not by the router: an id of thousands of digits is no silence, not a 500.
        silence_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
        # Logged by the store as `silence_removed`. An id past the store's integers is none.
        removed = 0 < silence_id <= MAX_ID and await backend.remove_silence(silence_id, body.who)
        if not removed or not removed.get("removed"):
            return _error(404, f"silence {text[:40]} is not in force")
        return JSONResponse(removed)

    def guarded(handler: Handler) -> Handler:
        """The handler, answering a bug with a JSON 500 and one log line, not a traceback dump."""

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                # Whatever went wrong, the caller gets JSON and the log stays one JSON line.
                log.exception(
                    "http_handler_failed", path=request.url.path, error=type(exc).__name__
                )
                return _error(500, "internal error; see healer's log")

        return run

    routes: list[Route] = [
        Route("/metrics", guarded(metrics)),
        Route("/healthz", guarded(healthz)),
        Route("/readyz", guarded(readyz)),
        Route("/v1/status", guarded(status)),
        Route("/v1/actions", guarded(actions)),
        Route("/v1/pause", guarded(pause), methods=["POST"]),
        Route("/v1/pauses", guarded(list_pauses), methods=["GET"]),
        Route("/v1/resume", guarded(resume), methods=["POST"]),
        Route("/v1/policies/{name}/resume", guarded(resume_policy), methods=["POST"]),
        Route("/v1/silences", guarded(add_silence), methods=["POST"]),
        Route("/v1/silences", guarded(list_silences), methods=["GET"]),
        Route("/v1/silences/{silence_id}", guarded(remove_silence), methods=["DELETE"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        # The router's own answers (404, 405) in JSON like every other answer.
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


Handler = Callable[[Request], Awaitable[Response]]
