"""The simulator over HTTP: CloudPilot's paths, the control API, and in-process serving.

``build_app`` wraps a ``Simulator`` in a Starlette app that answers every call
of DESIGN section 1 at its default path, plus the control API under
``/sim/``. API faults (errors, latency, hangs, malformed bodies) and the
optional token check apply to the CloudPilot paths only, never to ``/sim/``.

An action call is audited whatever the answer. One answered 401, with the
HTML error page or with an envelope error is not carried out, but when its
body names an app and instances the auditor still checks and counts it, under
the outcome ``unauthorized``, ``error`` or ``envelope_error``
(``Simulator.refuse``). One that hangs or gets a truncated body did run, and
is audited and counted by ``Simulator.act`` like any other.

``serve`` (async) and ``serve_in_thread`` (sync) run uvicorn in this process
on a loopback port and yield a ``RunningSimulator`` with its ``base_url``:
this is how tests and the demo get a real CloudPilot to talk to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from healer.cloudpilot.models import Action
from healer.simulator.auditor import ENVELOPE_ERROR, ERROR, UNAUTHORIZED
from healer.simulator.core import ApiFaults, FaultError, Simulator, UnknownApp

log = structlog.get_logger("healer.simulator")

#: The query paths CloudPilot documents (DESIGN section 1), by name in code.
QUERY_PATHS: dict[str, str] = {
    "app_meta": "/res/capacity/getappmeta",
    "min_usable": "/pandora/getappminusable",
    "instance_status": "/feiyun/get/instance",
    "hard_limits": "/feiyun/get/hardlimit",
    "disabled": "/feiyun/get/disabled",
    "instance_info": "/paas/instance/getinfo",
    "instance_by_addr": "/shell/get/instance",
    "events": "/alm/selfhealing/geteventlist",
}

#: The action paths: documented ones and, for the rest, the documented pattern.
ACTION_PATHS: dict[str, str] = {a.value: f"/feiyun/action/instance/{a.value}" for a in Action}

STATUS_FILTERS = frozenset({"RUNNING", "!RUNNING", "ALL"})

_ERROR_PAGE = (
    "<html><head><title>{0}</title></head><body><h1>{0} Service Unavailable</h1></body></html>"
)

Handler = Callable[[Request], Awaitable[Response]]
#: Audits and counts a call answered with an error before it ran, under an outcome.
Refuser = Callable[[Request, str], Awaitable[None]]


class ApiError(Exception):
    """A request CloudPilot answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _json(payload: Any, status: int = 200) -> Response:
    return Response(_dumps(payload), status_code=status, media_type="application/json")


class _Api:
    """Request handling shared by every CloudPilot path."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def body(self, payload: Any) -> Any:
        if self.sim.settings.envelope:
            return {"code": 0, "message": "ok", "data": payload}
        return payload

    def error(self, status: int, message: str) -> Response:
        return _json({"code": status, "message": message, "data": None}, status)

    def authorized(self, request: Request) -> bool:
        s = self.sim.settings
        if s.token is None:
            return True
        expected = f"{s.auth_scheme} {s.token}" if s.auth_scheme else s.token
        return request.headers.get(s.auth_header) == expected

    def endpoint(
        self,
        name: str,
        produce: Callable[[Request], Awaitable[Any]],
        path: str,
        refuse: Refuser | None = None,
    ) -> Handler:
        """A handler: auth, API faults, then ``produce`` (which may raise ApiError).

        ``refuse`` (actions only) is awaited with the outcome before answering
        an error that means the call did not run: 401, the error page, an
        envelope error.
        """
        sim = self.sim

        async def refused(request: Request, outcome: str) -> None:
            if refuse is not None:
                await refuse(request, outcome)

        async def handle(request: Request) -> Response:
            sim.auditor.requests[name] += 1
            if not self.authorized(request):
                await refused(request, UNAUTHORIZED)
                return self.error(401, "unauthorized")

            faults = sim.api_faults
            active = faults.any_active() and faults.applies_to(path)
            if active:
                if faults.latency:
                    await asyncio.sleep(faults.latency)
                rng = sim.api_rng
                if rng.random() < faults.error_rate:
                    sim.auditor.api_faults["error"] += 1
                    await refused(request, ERROR)
                    page = _ERROR_PAGE.format(faults.error_status)
                    return HTMLResponse(page, status_code=faults.error_status)
                if rng.random() < faults.envelope_error_rate:
                    sim.auditor.api_faults["envelope_error"] += 1
                    await refused(request, ENVELOPE_ERROR)
                    return _json({"code": 5001, "message": "internal error", "data": None})

            try:
                payload = await produce(request)
            except ApiError as exc:
                return self.error(exc.status, exc.message)
            except UnknownApp as exc:
                return self.error(404, f"app not found: {exc.args[0]}")
            content = _dumps(self.body(payload))

            if active:
                rng = sim.api_rng
                if rng.random() < faults.timeout_rate:
                    # The work is done; only the answer is late (an action's outcome is lost).
                    sim.auditor.api_faults["timeout"] += 1
                    await asyncio.sleep(faults.hang)
                if rng.random() < faults.malformed_rate:
                    sim.auditor.api_faults["malformed"] += 1
                    content = content[: max(1, len(content) // 2)]
            return Response(content, media_type="application/json")

        return handle


def _app_id(request: Request) -> str:
    app_id = request.query_params.get("app_id")
    if not app_id:
        raise ApiError(400, "missing query parameter app_id")
    return app_id


def _query_producers(sim: Simulator) -> dict[str, Callable[[Request], Awaitable[Any]]]:
    """One coroutine per query: read the parameters, tick, build the payload."""

    def simple(build: Callable[[str], Any]) -> Callable[[Request], Awaitable[Any]]:
        async def produce(request: Request) -> Any:
            app_id = _app_id(request)
            with sim.lock:
                sim.tick()
                return build(app_id)

        return produce

    async def instance_status(request: Request) -> Any:
        app_id = _app_id(request)
        status = request.query_params.get("status", "ALL")
        if status not in STATUS_FILTERS:
            raise ApiError(400, f"status must be one of RUNNING, !RUNNING, ALL; got {status!r}")
        with sim.lock:
            sim.tick()
            return sim.instance_status(app_id, status)

    async def instance_by_addr(request: Request) -> Any:
        host_ip = request.query_params.get("host_ip")
        port = request.query_params.get("port")
        if not host_ip or not port or not port.isdigit():
            raise ApiError(400, "host_ip and a numeric port are required")
        with sim.lock:
            sim.tick()
            return sim.instance_by_addr(host_ip, int(port))

    return {
        "app_meta": simple(sim.app_meta),
        "min_usable": simple(sim.min_usable),
        "instance_status": instance_status,
        "hard_limits": simple(sim.hard_limits),
        "disabled": simple(sim.disabled),
        "instance_info": simple(sim.instance_info),
        "instance_by_addr": instance_by_addr,
        "events": simple(sim.events),
    }


async def _action_body(request: Request) -> tuple[str, list[str]]:
    """The app and instances an action's body names; ApiError 400 when it names none."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    app_id = body.get("app_id")
    ids = body.get("instance_ids")
    if not isinstance(app_id, str) or not app_id:
        raise ApiError(400, "app_id must be a non-empty string")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "instance_ids must be a list of strings")
    return app_id, ids


def _action_producer(sim: Simulator, action: str) -> Callable[[Request], Awaitable[Any]]:
    async def produce(request: Request) -> Any:
        app_id, ids = await _action_body(request)
        faults = sim.api_faults
        rate = faults.partial_failure_rate if faults.applies_to(request.url.path) else 0.0
        return sim.act(
            action,
            app_id,
            ids,
            replica=request.headers.get("x-healer-replica"),
            partial_failure_rate=rate,
        )

    return produce


def _action_refuser(sim: Simulator, action: str) -> Refuser:
    """Audit an action answered with an error before it ran (``Simulator.refuse``).

    A body that names no app and instances, or an unknown app, has nothing to
    audit: the call gets the error answer it was getting anyway.
    """

    async def refuse(request: Request, outcome: str) -> None:
        try:
            app_id, ids = await _action_body(request)
        except ApiError:
            return
        with contextlib.suppress(UnknownApp):
            sim.refuse(
                action, app_id, ids, outcome, replica=request.headers.get("x-healer-replica")
            )

    return refuse


class FaultRequest(BaseModel):
    """Body of ``POST /sim/faults``: a fault kind and its target."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str
    app_id: str | None = None
    instance_id: str | None = None
    instance_ids: list[str] | None = Field(default=None, min_length=1)
    cluster: str | None = None
    by_address: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> FaultRequest:
        if self.instance_id is not None and self.instance_ids is not None:
            raise ValueError("give instance_id or instance_ids, not both")
        if self.instance_ids is not None and len(set(self.instance_ids)) != len(self.instance_ids):
            raise ValueError("instance_ids: an instance is named twice")
        if self.kind == "cluster_outage" and (self.instance_id or self.instance_ids):
            raise ValueError("cluster_outage hits a whole cluster: name a cluster or an app")
        return self


def _first_error(exc: ValidationError) -> str:
    """The first validation error as ``field: message`` (``body`` for the whole body)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _control_routes(sim: Simulator) -> list[Route]:
    async def apps(request: Request) -> Response:
        return _json({"app_ids": sim.app_ids})

    async def app_detail(request: Request) -> Response:
        with sim.lock:
            sim.tick()
            try:
                return _json(sim.describe(request.path_params["app_id"]))
            except UnknownApp:
                return _json({"message": "app not found"}, 404)

    async def faults(request: Request) -> Response:
        try:
            body = FaultRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _json({"message": _first_error(exc)}, 400)
        targets: list[str | None] = (
            [*body.instance_ids] if body.instance_ids else [body.instance_id]
        )
        hit: list[tuple[str, str]] = []
        with sim.lock:
            try:
                # Every named instance is checked before any is hit: a 400 changes nothing.
                if body.app_id is not None and body.instance_ids:
                    app = sim.apps.get(body.app_id)
                    missing = [i for i in body.instance_ids if app and i not in app.instances]
                    if missing:
                        raise FaultError(f"app {body.app_id!r} has no instance {missing[0]!r}")
                for iid in targets:
                    hit += sim.inject_fault(
                        body.kind,
                        body.app_id,
                        iid,
                        cluster=body.cluster,
                        by_address=body.by_address,
                    )
            except FaultError as exc:
                return _json({"message": str(exc)}, 400)
        injected = [{"app_id": a, "instance_id": i} for a, i in hit]
        return _json({"kind": body.kind, "injected": injected})

    async def api_faults(request: Request) -> Response:
        if request.method == "PUT":
            try:
                # Parsed by pydantic: no recursion limit to hit, and errors name the field.
                sim.api_faults = ApiFaults.model_validate_json(await request.body())
            except ValidationError as exc:
                return _json({"message": _first_error(exc)}, 400)
            log.info("sim_api_faults_set", **sim.api_faults.model_dump(exclude_defaults=True))
        return _json(sim.api_faults.model_dump())

    async def leader(request: Request) -> Response:
        if request.method == "PUT":
            try:
                body = await request.json()
            except (ValueError, RecursionError):
                return _json({"message": "body is not JSON"}, 400)
            name = body.get("replica") if isinstance(body, dict) else None
            if name is not None and not isinstance(name, str):
                return _json({"message": "replica must be a string or null"}, 400)
            sim.settings.leader = name
            log.info("sim_leader_set", replica=name)
        return _json({"replica": sim.settings.leader})

    async def report(request: Request) -> Response:
        sim.tick()
        return _json(sim.report())

    return [
        Route("/sim/apps", apps, methods=["GET"]),
        Route("/sim/apps/{app_id}", app_detail, methods=["GET"]),
        Route("/sim/faults", faults, methods=["POST"]),
        Route("/sim/api-faults", api_faults, methods=["GET", "PUT"]),
        Route("/sim/leader", leader, methods=["GET", "PUT"]),
        Route("/sim/report", report, methods=["GET"]),
    ]


def build_app(sim: Simulator) -> Starlette:
    """A Starlette app serving ``sim`` as CloudPilot, with the ``/sim/`` control API."""
    api = _Api(sim)
    routes: list[Route] = []
    for name, produce in _query_producers(sim).items():
        path = QUERY_PATHS[name]
        routes.append(Route(path, api.endpoint(name, produce, path), methods=["GET"]))
    for action, path in ACTION_PATHS.items():
        handler = api.endpoint(
            action, _action_producer(sim, action), path, _action_refuser(sim, action)
        )
        routes.append(Route(path, handler, methods=["POST"]))
    routes += _control_routes(sim)
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


# ---------------------------------------------------------------------- serving


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator being served: where it is, and the simulator itself."""

    sim: Simulator
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class _InProcessServer(uvicorn.Server):
    """uvicorn without signal handling: the host process (pytest, the demo) owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn looks for should_exit every 0.1 s; tests start and stop many servers.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            await asyncio.sleep(0.01)


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every answer waits 40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Starlette, **options: Any) -> uvicorn.Config:
    """uvicorn settings for the simulator: quiet, no lifespan, quick to stop."""
    defaults: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": 0.5,
        "backlog": 2048,
        # Loopback only: no proxy in front, and every header line saved is CPU saved.
        "proxy_headers": False,
        "server_header": False,
    }
    defaults.update(options)
    return uvicorn.Config(app, **defaults)


@contextlib.asynccontextmanager
async def serve(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[RunningSimulator]:
    """Serve ``sim`` on the running loop for the duration of the block."""
    sock = _bind(host, port)
    server = _InProcessServer(uvicorn_config(build_app(sim), **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped the server from starting
                raise RuntimeError("simulator server stopped before it started")
            await asyncio.sleep(0.005)
        yield RunningSimulator(sim=sim, host=host, port=int(sock.getsockname()[1]))
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def serve_in_thread(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> Iterator[RunningSimulator]:
    """Serve ``sim`` from a background thread with its own event loop, for sync callers."""
    sock = _bind(host, port)
    server = _InProcessServer(uvicorn_config(build_app(sim), **options))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the caller below, not lost in the thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="healer-simulator", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("simulator server stopped before it started") from (
                    failure[0] if failure else None
                )
            threading.Event().wait(0.005)
        yield RunningSimulator(sim=sim, host=host, port=int(sock.getsockname()[1]))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
