"""The typed async CloudPilot client: every query and every action of DESIGN section 1.

This is the first step of the flow client → snapshot → policy → guard →
executor: the only code that speaks HTTP to CloudPilot. It turns each answer
into the payload models of ``models.py`` or into one typed error from
``errors.py``; nothing it returns is a guess. A body that is not the
documented payload is an error naming the call and the app, never an empty
model.

Answers come in two forms, both accepted: the documented key at the top level,
or inside a ``{code, message, data}`` envelope whose ``code`` must be 0. JSON is
decoded with ``parse_float=Decimal``, so budgets stay exact.

Queries retry temporary errors (timeout, connection, 5xx, 429) a bounded number
of times with exponential backoff and full jitter. Actions are never retried:
their errors say whether the action surely did not happen (``ActionNotSent``,
``ActionRefused``) or may have (``ActionOutcomeUnknown``).

Metrics stay outside: ``on_request(call, outcome, seconds)`` is called once per
HTTP attempt, so the client never imports prometheus.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeVar

import httpx
import pydantic
import structlog

from healer.cloudpilot.config import ClientConfig
from healer.cloudpilot.errors import (
    ActionNotSent,
    ActionOutcomeUnknown,
    ActionRefused,
    CallConnectionError,
    CallTimeout,
    ClientStatusError,
    CloudPilotError,
    EnvelopeError,
    MalformedResponse,
    PermanentError,
    ServerError,
    TemporaryError,
)
from healer.cloudpilot.models import (
    Action,
    ActionResult,
    AppMeta,
    DisabledList,
    Event,
    HardLimits,
    InstanceInfo,
    InstanceInfoList,
    InstanceStatus,
    MinUsableInfo,
)
from healer.observe.logging import register_auth_scheme, register_secret

log = structlog.get_logger("healer.cloudpilot")

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

#: ``on_request(call, outcome, seconds)``, once per HTTP attempt. ``call`` is a query name
#: or an action's value; ``outcome`` is ``ok`` or an error's: ``timeout``, ``connect_error``,
#: ``connection_lost``, ``http_5xx``, ``http_429``, ``http_4xx``, ``http_3xx``, ``malformed``,
#: ``envelope_error``, ``permanent`` (a bad base_url).
RequestHook = Callable[[str, str, float], None]

StatusFilter = Literal["RUNNING", "!RUNNING", "ALL"]

REPLICA_HEADER = "X-Healer-Replica"

#: The fields of ``min_usable_info``; an answer with none of them states no budget.
BUDGET_FIELDS = frozenset(
    {"instanceControlBudget", "minUsable", "replica", "replica_that_at_least_need_to_keep"}
)


def quiet_http_loggers() -> None:
    """httpx logs a line per request at INFO: far too chatty for a poller."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _build_transport(config: ClientConfig, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if config.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return AiohttpTransport(limits=limits, trust_env=False)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)


def _first_error(exc: pydantic.ValidationError) -> str:
    """A short account of a validation error: where and what, never the input values."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(value)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _code_is_ok(code: Any) -> bool:
    if isinstance(code, bool):
        return False
    if isinstance(code, int | Decimal):
        return code == 0
    return isinstance(code, str) and code.strip() == "0"


class CloudPilotClient:
    """One async client for all CloudPilot calls; use it with ``async with``.

    ``transport`` replaces the HTTP transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        on_request: RequestHook | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or ClientConfig()
        self._on_request = on_request
        self._rng = random.Random()
        quiet_http_loggers()

        cfg = self.config
        if cfg.token is not None:
            # CloudPilot may echo the token (or the whole header) in an error message.
            register_secret(cfg.token.get_secret_value())
            register_auth_scheme(cfg.auth_scheme)
        limits = httpx.Limits(
            max_connections=cfg.max_connections,
            max_keepalive_connections=cfg.max_keepalive_connections,
            keepalive_expiry=cfg.keepalive_expiry,
        )
        timeout = httpx.Timeout(
            cfg.read_timeout,
            connect=cfg.connect_timeout,
            write=cfg.read_timeout,
            pool=cfg.total_timeout,
        )
        chosen = transport or _build_transport(cfg, limits)
        self._http = httpx.AsyncClient(
            base_url=cfg.base_url,
            headers=cfg.auth_headers(),
            timeout=timeout,
            transport=chosen,
            # Configuration is the only source of where requests go: no proxy from the env.
            trust_env=False,
            follow_redirects=False,
        )
        # httpx-aiohttp names its errors loosely; see _transport_error.
        self._aiohttp = type(chosen).__module__.startswith("httpx_aiohttp")

    def __repr__(self) -> str:
        cfg = self.config
        return f"CloudPilotClient(base_url={cfg.base_url!r}, transport={cfg.transport!r})"

    async def __aenter__(self) -> CloudPilotClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- queries ---------------------------------------------------------------------------

    async def app_meta(self, app_id: str) -> AppMeta:
        """``app_meta``: product, module, cluster, service level, masks, owners."""
        return await self._query(
            "app_meta",
            app_id,
            {},
            "app_meta",
            lambda v: self._model(AppMeta, v, "app_meta", app_id),
        )

    async def min_usable(self, app_id: str) -> MinUsableInfo | None:
        """``min_usable_info``: the availability budget, values exact.

        None when CloudPilot states no budget: ``min_usable_info`` is ``null``, or
        an object with none of the budget's fields. The guard reads None as an
        unknown budget (``budget_unknown``); an empty model would read as "no
        floor", i.e. nothing required, which is the unsafe guess.
        """

        def read(v: Any) -> MinUsableInfo | None:
            if v is None or (isinstance(v, dict) and not BUDGET_FIELDS & v.keys()):
                log.debug("cloudpilot_budget_absent", app_id=app_id)
                return None
            return self._model(MinUsableInfo, v, "min_usable", app_id)

        return await self._query("min_usable", app_id, {}, "min_usable_info", read)

    async def instance_status(self, app_id: str, status: StatusFilter = "ALL") -> InstanceStatus:
        """Per-state counts with up to five names each; ``status`` filters the states."""

        def read(payload: Any) -> InstanceStatus:
            return self._model(InstanceStatus, payload, "instance_status", app_id)

        return await self._query(
            "instance_status",
            app_id,
            {"status": status},
            "status_instance_top_five",
            read,
            whole=True,
        )

    async def hard_limits(self, app_id: str) -> HardLimits:
        """The app's hard limits (undocumented shape: the whole payload, all fields kept)."""

        def read(payload: Any) -> HardLimits:
            return self._model(HardLimits, payload, "hard_limits", app_id)

        return await self._query("hard_limits", app_id, {}, None, read, whole=True)

    async def disabled(self, app_id: str) -> list[str]:
        """``disabled_instance_id_list``; a ``null`` list is taken as empty."""

        def read(v: Any) -> list[str]:
            wrapped = {"disabled_instance_id_list": [] if v is None else v}
            return self._model(DisabledList, wrapped, "disabled", app_id).disabled_instance_id_list

        return await self._query("disabled", app_id, {}, "disabled_instance_id_list", read)

    async def instance_info(self, app_id: str) -> list[InstanceInfo]:
        """``instance_info_list``: one entry per instance; a ``null`` list is taken as empty."""

        def read(v: Any) -> list[InstanceInfo]:
            wrapped = {"instance_info_list": [] if v is None else v}
            return self._model(
                InstanceInfoList, wrapped, "instance_info", app_id
            ).instance_info_list

        return await self._query("instance_info", app_id, {}, "instance_info_list", read)

    async def instance_by_addr(self, app_id: str, host_ip: str, port: int) -> str | None:
        """The instance at ``host_ip:port``, or None when CloudPilot knows none there."""

        def read(v: Any) -> str | None:
            if v is None or isinstance(v, str):
                return v or None
            raise MalformedResponse(
                f"instance_id is a {type(v).__name__}, not a string",
                call="instance_by_addr",
                app_id=app_id,
            )

        params = {"host_ip": host_ip, "port": str(port)}
        return await self._query("instance_by_addr", app_id, params, "instance_id", read)

    async def events(self, app_id: str) -> list[Event]:
        """The app's monitoring events; one unreadable event is logged and skipped."""

        def read(v: Any) -> list[Event]:
            if v is None:
                return []
            if not isinstance(v, list):
                raise MalformedResponse(
                    f"events is a {type(v).__name__}, not a list", call="events", app_id=app_id
                )
            parsed: list[Event] = []
            for index, raw in enumerate(v):
                # An odd event must not hide the app's other events: skip it, loudly.
                try:
                    parsed.append(Event.model_validate(raw))
                except pydantic.ValidationError as exc:
                    log.warning(
                        "cloudpilot_event_skipped",
                        app_id=app_id,
                        index=index,
                        error=_first_error(exc),
                    )
            return parsed

        return await self._query("events", app_id, {}, "events", read)

    # -- actions ---------------------------------------------------------------------------

    async def act(
        self,
        action: Action | str,
        app_id: str,
        instance_ids: Sequence[str],
        *,
        replica: str | None = None,
    ) -> ActionResult:
        """Ask CloudPilot to carry out ``action`` on ``instance_ids``; never retried.

        Returns the answer with ``unknown_instances`` filled in. Raises
        ``ActionNotSent`` or ``ActionRefused`` when the action surely did not
        happen, ``ActionOutcomeUnknown`` when it may have.
        """
        call = Action(action).value
        ids = list(instance_ids)
        if not ids:
            raise ValueError(f"{call} for app {app_id}: no instance ids given")
        headers = {REPLICA_HEADER: replica} if replica else {}
        body = {"app_id": app_id, "instance_ids": ids}

        def send() -> Awaitable[httpx.Response]:
            return self._http.post(self.config.paths.for_call(call), json=body, headers=headers)

        def read(payload: Mapping[str, Any]) -> ActionResult:
            if "success_instances" not in payload and "failed_instances" not in payload:
                raise MalformedResponse(
                    "neither success_instances nor failed_instances in the answer",
                    call=call,
                    app_id=app_id,
                )
            return self._model(ActionResult, payload, call, app_id).with_requested(ids)

        try:
            return await self._attempt(call, app_id, send, None, read)
        except CloudPilotError as exc:
            verdict = self._action_error(exc, ids)
            log.warning(
                "cloudpilot_action_failed",
                call=call,
                app_id=app_id,
                instances=len(ids),
                outcome=exc.outcome,
                verdict=type(verdict).__name__,
                error=str(exc),
            )
            raise verdict from exc

    async def restart(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.RESTART, app_id, ids, replica=replica)

    async def disable(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.DISABLE, app_id, ids, replica=replica)

    async def migrate(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.MIGRATE, app_id, ids, replica=replica)

    async def delete(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.DELETE, app_id, ids, replica=replica)

    async def enable(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.ENABLE, app_id, ids, replica=replica)

    async def repair(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.REPAIR, app_id, ids, replica=replica)

    async def stop(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.STOP, app_id, ids, replica=replica)

    async def start(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.START, app_id, ids, replica=replica)

    async def interrupt(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.INTERRUPT, app_id, ids, replica=replica)

    async def unfreeze(
        self, app_id: str, ids: Sequence[str], *, replica: str | None = None
    ) -> ActionResult:
        return await self.act(Action.UNFREEZE, app_id, ids, replica=replica)

    # -- the machinery ---------------------------------------------------------------------

    async def _query(
        self,
        call: str,
        app_id: str,
        params: Mapping[str, str],
        key: str | None,
        read: Callable[[Any], T],
        *,
        whole: bool = False,
    ) -> T:
        """GET a query, retrying temporary errors; ``read`` gets the key's value or the payload."""
        path = self.config.paths.for_call(call)
        query = {"app_id": app_id, **params}
        attempts = self.config.query_retries + 1

        def send() -> Awaitable[httpx.Response]:
            return self._http.get(path, params=query)

        def pick(payload: Mapping[str, Any]) -> T:
            return read(payload if whole or key is None else payload[key])

        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(call, app_id, send, key, pick)
            except TemporaryError as exc:
                # Timeouts, lost connections and 5xx pass: wait, then ask again, boundedly.
                if attempt == attempts:
                    log.warning(
                        "cloudpilot_call_failed",
                        call=call,
                        app_id=app_id,
                        attempt=attempt,
                        of=attempts,
                        outcome=exc.outcome,
                        error=str(exc),
                        next="give_up",
                    )
                    raise
                delay = self._backoff(attempt - 1)
                log.info(
                    "cloudpilot_retry",
                    call=call,
                    app_id=app_id,
                    attempt=attempt,
                    of=attempts,
                    outcome=exc.outcome,
                    delay=round(delay, 3),
                    next="retry",
                )
                await asyncio.sleep(delay)
            except PermanentError as exc:
                log.warning(
                    "cloudpilot_call_failed",
                    call=call,
                    app_id=app_id,
                    attempt=attempt,
                    of=attempts,
                    outcome=exc.outcome,
                    error=str(exc),
                    next="give_up",
                )
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**retry)]."""
        ceiling = min(self.config.backoff_cap, self.config.backoff_base * (2**retry))
        return self._rng.uniform(0, ceiling)

    async def _attempt(
        self,
        call: str,
        app_id: str,
        send: Callable[[], Awaitable[httpx.Response]],
        key: str | None,
        read: Callable[[Mapping[str, Any]], T],
    ) -> T:
        """One HTTP exchange, decoded and read; reported once to ``on_request``."""
        started = time.perf_counter()
        try:
            response = await self._exchange(call, app_id, send)
            payload = self._unwrap(call, app_id, response, key)
            result = read(payload)
        except CloudPilotError as exc:
            self._report(call, exc.outcome, time.perf_counter() - started)
            raise
        self._report(call, "ok", time.perf_counter() - started)
        return result

    async def _exchange(
        self, call: str, app_id: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        """Send and receive, mapping every transport failure and non-2xx status to our errors."""
        try:
            async with asyncio.timeout(self.config.total_timeout):
                response = await send()
        except TimeoutError as exc:
            # asyncio.timeout: the whole attempt ran over; the request may have gone out.
            raise CallTimeout(
                f"no answer within {self.config.total_timeout}s", call=call, app_id=app_id
            ) from exc
        except httpx.HTTPError as exc:
            raise self._transport_error(call, app_id, exc) from exc

        status = response.status_code
        if 200 <= status < 300:
            return response
        reason = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status >= 500 or status == 429:
            raise ServerError(reason, call=call, app_id=app_id, status=status)
        raise ClientStatusError(reason, call=call, app_id=app_id, status=status)

    def _transport_error(self, call: str, app_id: str, exc: httpx.HTTPError) -> CloudPilotError:
        """The most specific error for an httpx failure; ``request_sent=False`` if surely unsent."""
        if self._aiohttp:
            # httpx-aiohttp maps a dropped connection to ConnectTimeout: judge aiohttp's own error.
            judged = _judge_aiohttp_error(call, app_id, exc.__cause__)
            if judged is not None:
                return judged

        name = type(exc).__name__
        error: CloudPilotError
        unsent = False
        if isinstance(exc, httpx.TimeoutException):
            error = CallTimeout(name, call=call, app_id=app_id)
            unsent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
        elif isinstance(exc, httpx.ConnectError):
            error = CallConnectionError(name, call=call, app_id=app_id, outcome="connect_error")
            unsent = True
        elif isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            error = PermanentError(f"bad base_url or path: {name}", call=call, app_id=app_id)
            unsent = True
        elif isinstance(exc, httpx.DecodingError):
            error = MalformedResponse(f"body undecodable: {name}", call=call, app_id=app_id)
        elif isinstance(exc, httpx.TransportError):
            error = CallConnectionError(name, call=call, app_id=app_id, outcome="connection_lost")
        else:
            error = PermanentError(f"request failed: {name}", call=call, app_id=app_id)

        if unsent:
            error.request_sent = False
        return error

    def _unwrap(
        self, call: str, app_id: str, response: httpx.Response, key: str | None
    ) -> Mapping[str, Any]:
        """The payload object: the body itself, or the ``data`` of an envelope whose code is 0."""
        try:
            body = json.loads(response.content, parse_float=Decimal)
        except (ValueError, RecursionError) as exc:
            # ValueError covers bad JSON and bad UTF-8; RecursionError absurd nesting.
            ctype = response.headers.get("content-type", "no content-type")
            message = f"body is not JSON ({ctype}, {len(response.content)} bytes)"
            raise MalformedResponse(message, call=call, app_id=app_id) from exc
        if not isinstance(body, dict):
            message = f"body is a JSON {type(body).__name__}, not an object"
            raise MalformedResponse(message, call=call, app_id=app_id)

        env = self.config.envelope
        enveloped = env.code_key in body or env.data_key in body
        data = body.get(env.data_key)
        if env.code_key in body and not _code_is_ok(body[env.code_key]):
            code = body[env.code_key]
            api_message = body.get(env.message_key)
            message = f"envelope code {code!r}: {api_message!r}"
            raise EnvelopeError(
                message,
                call=call,
                app_id=app_id,
                code=code,
                api_message=api_message,
                payload=data if isinstance(data, dict) else body,
            )

        if key is not None and key in body:
            payload: dict[str, Any] = body
        elif enveloped and isinstance(data, dict):
            payload = data
        elif enveloped and env.data_key in body:
            message = f"envelope {env.data_key} is a {type(data).__name__}, not an object"
            raise MalformedResponse(message, call=call, app_id=app_id)
        else:
            payload = body

        if key is not None and key not in payload:
            keys = ", ".join(sorted(str(k) for k in payload)[:8]) or "none"
            message = f"documented key {key!r} missing (keys: {keys})"
            raise MalformedResponse(message, call=call, app_id=app_id)
        return payload

    def _model(self, model: type[M], value: Any, call: str, app_id: str) -> M:
        """Validate ``value`` as ``model``; a wrong shape or type is a MalformedResponse."""
        if not isinstance(value, dict):
            message = f"{model.__name__} payload is a {type(value).__name__}, not an object"
            raise MalformedResponse(message, call=call, app_id=app_id)
        try:
            return model.model_validate(value)
        except pydantic.ValidationError as exc:
            message = f"{model.__name__} invalid at {_first_error(exc)}"
            raise MalformedResponse(message, call=call, app_id=app_id) from exc

    def _action_error(self, exc: CloudPilotError, ids: list[str]) -> CloudPilotError:
        """What a failed action means for its instances: not sent, refused, or unknown."""
        if isinstance(exc, PermanentError) and exc.request_sent is False:
            return ActionRefused(ids, exc)  # e.g. a bad base_url: it can never be sent
        if exc.request_sent is False or (isinstance(exc, ServerError) and exc.status == 429):
            return ActionNotSent(ids, exc)
        if isinstance(exc, EnvelopeError) and _names_instances(exc.payload):
            # A refusal that names instances contradicts itself: assume some may have been hit.
            return ActionOutcomeUnknown(ids, exc)
        if isinstance(exc, ClientStatusError | EnvelopeError):
            return ActionRefused(ids, exc)
        # Timeouts and dropped connections after sending, 5xx, unreadable 200s.
        return ActionOutcomeUnknown(ids, exc)

    def _report(self, call: str, outcome: str, seconds: float) -> None:
        if self._on_request is None:
            return
        # A broken metrics hook must never break a CloudPilot call.
        try:
            self._on_request(call, outcome, seconds)
        except Exception as exc:
            log.error("cloudpilot_on_request_failed", call=call, error=type(exc).__name__)


def _names_instances(payload: Mapping[str, Any]) -> bool:
    success = payload.get("success_instances")
    return isinstance(success, list) and bool(success)


def _judge_aiohttp_error(
    call: str, app_id: str, cause: BaseException | None
) -> CloudPilotError | None:
    """Our error for an aiohttp failure under httpx-aiohttp, or None when it is not one."""
    try:
        import aiohttp
    except ImportError:  # without aiohttp the error came from elsewhere: judge it as httpx's
        return None
    if not isinstance(cause, aiohttp.ClientError):
        return None

    name = type(cause).__name__
    error: CloudPilotError
    if isinstance(cause, aiohttp.ClientConnectorError):
        error = CallConnectionError(name, call=call, app_id=app_id, outcome="connect_error")
        error.request_sent = False
    elif isinstance(cause, aiohttp.ConnectionTimeoutError):
        error = CallTimeout(name, call=call, app_id=app_id)
        error.request_sent = False
    elif isinstance(cause, aiohttp.ServerTimeoutError):
        error = CallTimeout(name, call=call, app_id=app_id)
    else:
        # Disconnected, reset, truncated payload: all after the request may have gone out.
        error = CallConnectionError(name, call=call, app_id=app_id, outcome="connection_lost")
    return error
