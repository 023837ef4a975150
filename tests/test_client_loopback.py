"""The CloudPilot client over real loopback HTTP, on both transports.

A small Starlette app under uvicorn plays well-formed answers; raw asyncio
sockets play the failures only a real network shows: a refused connection, a
connection dropped after the request was read, an answer that never comes.
These are the cases where an action's outcome is known or not, so both the
native transport and the httpx-aiohttp one are held to the same verdicts.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from conftest import free_port, require_or_skip
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import ClientConfig
from healer.cloudpilot.errors import (
    ActionNotSent,
    ActionOutcomeUnknown,
    CallConnectionError,
    CallTimeout,
    ClientStatusError,
    TemporaryError,
)
from healer.cloudpilot.models import Action

HAVE_AIOHTTP = importlib.util.find_spec("httpx_aiohttp") is not None
TOKEN = "s3cr3t-t0ken-value-4711"


def transports() -> list[Any]:
    """Both transports; the aiohttp one is skipped where httpx-aiohttp is not installed."""
    return [
        "native",
        pytest.param(
            "aiohttp",
            marks=pytest.mark.skipif(not HAVE_AIOHTTP, reason="httpx-aiohttp not installed"),
        ),
    ]


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeCloudPilot:
    """A uvicorn-served Starlette app answering every path with ``respond``."""

    base_url: str
    respond: Callable[[Recorded], Response]
    seen: list[Recorded] = field(default_factory=list)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloudPilot]:
    port = free_port()
    state = FakeCloudPilot(f"http://127.0.0.1:{port}", lambda r: JSONResponse({}))

    async def endpoint(request: Request) -> Response:
        recorded = Recorded(
            request.method,
            request.url.path,
            dict(request.query_params),
            dict(request.headers),
            await request.body(),
        )
        state.seen.append(recorded)
        return state.respond(recorded)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        require_or_skip(not task.done(), "uvicorn could not start on loopback")
        await asyncio.sleep(0.01)
    yield state
    server.should_exit = True
    await task


@dataclass
class RawServer:
    base_url: str
    requests: int = 0


async def raw_server(behaviour: str) -> tuple[asyncio.Server, RawServer]:
    """A socket server reading a request, then: ``drop``, ``hang`` or a ``partial`` answer."""
    info = RawServer("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        info.requests += 1
        if behaviour == "hang":
            await reader.read()  # until the client gives up and closes
        elif behaviour == "partial":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"success_')
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    info.base_url = f"http://127.0.0.1:{port}"
    return server, info


def config(base_url: str, transport: str, **overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "transport": transport,
        "backoff_base": 0.0,
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "total_timeout": 2.0,
    }
    return ClientConfig(**{**values, **overrides})


class TestRealHttpAnswers:
    @pytest.mark.parametrize("transport", transports())
    async def test_a_query_and_an_action_round_trip_with_auth_and_replica_headers(
        self, fake: FakeCloudPilot, transport: str
    ) -> None:
        def respond(r: Recorded) -> Response:
            if r.method == "GET":
                return JSONResponse(
                    {"code": 0, "message": "ok", "data": {"disabled_instance_id_list": ["a.2"]}}
                )
            return JSONResponse({"success_instances": ["a.1"], "failed_instances": []})

        fake.respond = respond
        async with CloudPilotClient(config(fake.base_url, transport, token=TOKEN)) as client:
            disabled = await client.disabled("app-1")
            result = await client.act(Action.RESTART, "app-1", ["a.1"], replica="healer-0")

        assert disabled == ["a.2"]
        assert result.success_instances == ["a.1"]
        get, post = fake.seen
        assert (get.path, get.params) == ("/feiyun/get/disabled", {"app_id": "app-1"})
        assert get.headers["authorization"] == f"Bearer {TOKEN}"
        assert post.path == "/feiyun/action/instance/restart"
        assert post.body == b'{"app_id":"app-1","instance_ids":["a.1"]}'
        assert post.headers["x-healer-replica"] == "healer-0"
        assert post.headers["authorization"] == f"Bearer {TOKEN}"

    @pytest.mark.parametrize("transport", transports())
    async def test_a_custom_auth_header_without_scheme_carries_the_bare_token(
        self, fake: FakeCloudPilot, transport: str
    ) -> None:
        fake.respond = lambda r: JSONResponse({"disabled_instance_id_list": []})
        cfg = config(fake.base_url, transport, token=TOKEN, auth_header="X-Api-Key", auth_scheme="")
        async with CloudPilotClient(cfg) as client:
            await client.disabled("app-1")

        assert fake.seen[0].headers["x-api-key"] == TOKEN
        assert "authorization" not in fake.seen[0].headers

    @pytest.mark.parametrize("transport", transports())
    async def test_a_5xx_is_retried_and_a_4xx_is_not(
        self, fake: FakeCloudPilot, transport: str
    ) -> None:
        fake.respond = lambda r: Response(
            "<html>busy</html>", status_code=503, media_type="text/html"
        )
        async with CloudPilotClient(config(fake.base_url, transport, query_retries=2)) as client:
            with pytest.raises(TemporaryError):
                await client.app_meta("app-1")
            retried = len(fake.seen)
            fake.respond = lambda r: JSONResponse({"message": "no app"}, status_code=404)
            with pytest.raises(ClientStatusError):
                await client.app_meta("app-1")

        assert retried == 3
        assert len(fake.seen) == 4


class TestRealNetworkFailures:
    @pytest.mark.parametrize("transport", transports())
    async def test_a_refused_connection_means_the_action_was_not_sent(self, transport: str) -> None:
        base_url = f"http://127.0.0.1:{free_port()}"
        async with CloudPilotClient(config(base_url, transport)) as client:
            with pytest.raises(ActionNotSent) as caught:
                await client.act(Action.RESTART, "app-1", ["a.1"])
            with pytest.raises(CallConnectionError):
                await client.app_meta("app-1")

        assert caught.value.instance_ids == ["a.1"]

    @pytest.mark.parametrize("transport", transports())
    @pytest.mark.parametrize("behaviour", ["drop", "partial", "hang"])
    async def test_an_answer_lost_after_sending_is_an_unknown_outcome(
        self, transport: str, behaviour: str
    ) -> None:
        server, info = await raw_server(behaviour)
        async with server:
            cfg = config(info.base_url, transport, read_timeout=0.3, query_retries=1)
            async with CloudPilotClient(cfg) as client:
                with pytest.raises(ActionOutcomeUnknown) as caught:
                    await client.act(Action.MIGRATE, "app-1", ["a.1", "a.2"])
                actions_seen = info.requests
                with pytest.raises(TemporaryError):
                    await client.instance_status("app-1")

        assert caught.value.instance_ids == ["a.1", "a.2"]
        assert actions_seen == 1
        # The query was retried once: two more requests. aiohttp itself resends an idempotent
        # GET once when a kept-alive connection drops, so it may send more.
        if transport == "native":
            assert info.requests == 3
        else:
            assert info.requests >= 3

    @pytest.mark.parametrize("transport", transports())
    async def test_the_total_timeout_bounds_one_attempt(self, transport: str) -> None:
        server, info = await raw_server("hang")
        async with server:
            cfg = config(
                info.base_url, transport, read_timeout=10.0, total_timeout=0.2, query_retries=0
            )
            async with CloudPilotClient(cfg) as client:
                with pytest.raises(CallTimeout):
                    await client.hard_limits("app-1")
                with pytest.raises(ActionOutcomeUnknown):
                    await client.act(Action.STOP, "app-1", ["a.1"])


class TestTheTokenNeverLeaks:
    @pytest.mark.parametrize("transport", transports())
    async def test_no_log_line_error_or_repr_carries_the_token(
        self, fake: FakeCloudPilot, transport: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        answers = iter(
            [
                Response("<html>down</html>", status_code=502),
                JSONResponse({"code": 1, "message": "denied", "data": None}),
                JSONResponse({"message": "forbidden"}, status_code=403),
            ]
        )
        fake.respond = lambda r: next(answers)
        cfg = config(fake.base_url, transport, token=TOKEN, query_retries=1)
        errors: list[Exception] = []
        caplog.set_level(logging.DEBUG)
        with capture_logs() as logs:
            async with CloudPilotClient(cfg) as client:
                # Even with httpx and httpcore made verbose again, no header is logged.
                for name in ("httpx", "httpcore"):
                    caplog.set_level(logging.DEBUG, logger=name)
                for call in (client.app_meta("app-1"), client.act(Action.DELETE, "app-1", ["a.1"])):
                    try:
                        await call
                    except Exception as exc:
                        errors.append(exc)
                shown = repr(client) + repr(cfg) + str(cfg) + repr(cfg.model_dump())

        assert [r.headers["authorization"] for r in fake.seen] == [f"Bearer {TOKEN}"] * 3
        assert len(errors) == 2
        assert any(e["event"] == "cloudpilot_retry" for e in logs)
        assert any(e["event"] == "cloudpilot_action_failed" for e in logs)
        assert caplog.records, "httpx/httpcore debug logs were expected"
        assert TOKEN not in caplog.text
        assert TOKEN not in repr(logs)
        assert TOKEN not in shown
        for error in errors:
            assert TOKEN not in str(error) and TOKEN not in repr(error)
            assert TOKEN not in str(error.__cause__)
