"""Registered secrets never reach a log line, wherever CloudPilot or a traceback puts them.

CloudPilot may echo the token it was sent, or the whole ``Authorization``
header, in an error message; the client turns that message into an error
whose text is logged in ``error=...``. These tests drive the real client and
``configure_logging`` (JSON lines) and look for the token in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from conftest import free_port, lines
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import ClientConfig
from healer.cloudpilot.errors import CloudPilotError
from healer.observe.logging import (
    clear_secrets,
    configure_logging,
    redact,
    register_auth_scheme,
    register_secret,
)

TOKEN = "CPTOKEN-supersecret-123"


class TestRegistry:
    def test_a_registered_secret_is_redacted_inside_any_string_field(
        self, output: io.StringIO
    ) -> None:
        configure_logging(stream=output)
        register_secret(TOKEN)

        structlog.get_logger().warning(
            "call_failed",
            error=f"invalid credentials raw {TOKEN}",
            detail={"echo": [f"x{TOKEN}y"]},
        )

        [line] = lines(output)
        assert TOKEN not in output.getvalue()
        assert line["error"] == "invalid credentials raw [REDACTED]"
        assert line["detail"] == {"echo": ["x[REDACTED]y"]}

    def test_a_registered_secret_in_a_traceback_is_redacted(self, output: io.StringIO) -> None:
        configure_logging(stream=output)
        register_secret(TOKEN)

        try:
            raise RuntimeError(f"server said {TOKEN!r}")
        except RuntimeError:
            structlog.get_logger().exception("call_crashed")

        [line] = lines(output)
        assert "RuntimeError: server said '[REDACTED]'" in line["exception"]
        assert TOKEN not in output.getvalue()

    def test_an_object_logged_as_a_field_is_redacted_through_its_text(
        self, output: io.StringIO
    ) -> None:
        configure_logging(stream=output)
        register_secret(TOKEN)

        structlog.get_logger().error("call_failed", error=ValueError(f"bad {TOKEN}"))

        assert TOKEN not in output.getvalue()
        assert lines(output)[0]["error"] == "bad [REDACTED]"

    def test_a_stdlib_record_is_redacted_too(self, output: io.StringIO) -> None:
        configure_logging(stream=output)
        register_secret(TOKEN)

        logging.getLogger("apscheduler").error("job failed: %s", TOKEN)

        assert lines(output)[0]["event"] == "job failed: [REDACTED]"

    def test_values_shorter_than_six_characters_are_not_registered(self) -> None:
        clear_secrets()
        try:
            register_secret("abc12")
            register_secret("")
            register_secret(None)

            assert redact("abc12 stays") == "abc12 stays"
        finally:
            clear_secrets()

    def test_a_configured_auth_scheme_redacts_what_follows_it(self) -> None:
        clear_secrets()
        try:
            register_auth_scheme("Token")

            assert redact("got header 'Token other-credential'") == "got header 'Token [REDACTED]'"
            assert redact("Tokens: 3") == "Tokens: 3"
        finally:
            clear_secrets()


def echo_handler(body: dict[str, Any]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    return handle


class TestTheClientRegistersItsToken:
    async def test_an_envelope_message_echoing_the_token_is_logged_without_it(
        self, output: io.StringIO
    ) -> None:
        configure_logging(stream=output)
        body = {"code": 1, "message": f"invalid credentials raw {TOKEN}"}
        config = ClientConfig(token=TOKEN, query_retries=0)
        transport = httpx.MockTransport(echo_handler(body))

        async with CloudPilotClient(config, transport=transport) as client:
            with pytest.raises(CloudPilotError):
                await client.instance_info("app-1")

        [line] = [x for x in lines(output) if x["event"] == "cloudpilot_call_failed"]
        assert "invalid credentials raw [REDACTED]" in line["error"]
        assert TOKEN not in output.getvalue()

    async def test_a_whole_token_header_echoed_over_loopback_is_logged_without_it(
        self, output: io.StringIO
    ) -> None:
        """A real server echoes the header it got; the action's failure is logged redacted."""

        async def refuse(request: Request) -> JSONResponse:
            header = request.headers.get("authorization", "")
            return JSONResponse({"code": 7, "message": f"bad header {header}"})

        app = Starlette(routes=[Route("/{path:path}", refuse, methods=["GET", "POST"])])
        port = free_port()
        async with serve(app, port):
            configure_logging(stream=output)
            config = ClientConfig(
                base_url=f"http://127.0.0.1:{port}",
                token=TOKEN,
                auth_scheme="Token",
                query_retries=0,
            )
            async with CloudPilotClient(config) as client:
                with pytest.raises(CloudPilotError):
                    await client.restart("app-1", ["i-1"])
                with pytest.raises(CloudPilotError):
                    await client.app_meta("app-1")

        text = output.getvalue()
        events = [x["event"] for x in lines(output)]
        assert "cloudpilot_action_failed" in events
        assert "cloudpilot_call_failed" in events
        assert "Token [REDACTED]" in text
        assert TOKEN not in text
        assert "supersecret" not in text


@contextlib.asynccontextmanager
async def serve(app: Starlette, port: int) -> AsyncIterator[None]:
    """``app`` on 127.0.0.1:``port`` for the block."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task
