"""Logging setup: JSON lines of one shape from structlog and stdlib, quiet httpx, no secrets."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta

import pytest
import structlog
from conftest import lines
from structlog.testing import capture_logs

from healer.observe.logging import configure_logging, is_secret_key, redact


class TestShape:
    def test_a_structlog_event_is_one_json_line_with_time_level_and_event(
        self, output: io.StringIO
    ) -> None:
        configure_logging(stream=output)

        structlog.get_logger("healer.engine").info("action_issued", app_id="web-1", attempt=2)

        [line] = lines(output)
        assert line["event"] == "action_issued"
        assert line["level"] == "info"
        assert line["logger"] == "healer.engine"
        assert (line["app_id"], line["attempt"]) == ("web-1", 2)
        stamp = datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() == timedelta(0)

    def test_a_stdlib_record_comes_out_in_the_same_shape(self, output: io.StringIO) -> None:
        configure_logging(stream=output)

        logging.getLogger("uvicorn.error").warning("listening on %s", "127.0.0.1:8080")

        [line] = lines(output)
        assert line["event"] == "listening on 127.0.0.1:8080"
        assert line["level"] == "warning"
        assert line["logger"] == "uvicorn.error"
        assert "timestamp" in line

    def test_a_library_logger_with_its_own_handler_is_routed_through_ours(
        self, output: io.StringIO
    ) -> None:
        # What uvicorn's default log config leaves behind: a handler, and no propagation.
        uvicorn = logging.getLogger("uvicorn.error")
        uvicorn.addHandler(logging.StreamHandler(io.StringIO()))
        uvicorn.propagate = False
        uvicorn.setLevel(logging.WARNING)
        configure_logging(stream=output)

        uvicorn.info("Application startup complete.")

        assert [x["event"] for x in lines(output)] == ["Application startup complete."]

    def test_bound_context_appears_on_every_line(self, output: io.StringIO) -> None:
        configure_logging(stream=output)
        structlog.contextvars.bind_contextvars(app_id="web-1", policy="restart-unknown")

        structlog.get_logger().info("cycle_started")
        logging.getLogger("healer.other").info("from stdlib")

        assert [(x["app_id"], x["policy"]) for x in lines(output)] == [
            ("web-1", "restart-unknown"),
            ("web-1", "restart-unknown"),
        ]

    def test_console_mode_writes_text_for_people(self, output: io.StringIO) -> None:
        configure_logging(json=False, stream=output)

        structlog.get_logger().info("demo_started", apps=20)

        text = output.getvalue()
        assert "demo_started" in text and "apps=20" in text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


class TestLevels:
    def test_debug_is_dropped_at_info_and_kept_at_debug(self, output: io.StringIO) -> None:
        configure_logging(level="info", stream=output)
        structlog.get_logger().debug("hidden")
        configure_logging(level="debug", stream=output)
        structlog.get_logger().debug("shown")

        assert [x["event"] for x in lines(output)] == ["shown"]

    def test_per_request_and_per_job_lines_are_quiet_but_warnings_pass(
        self, output: io.StringIO
    ) -> None:
        configure_logging(level="debug", stream=output)

        logging.getLogger("httpx").info("HTTP Request: GET http://127.0.0.1/ 200 OK")
        logging.getLogger("httpcore.connection").debug("connect_tcp.started")
        logging.getLogger("apscheduler.executors.default").info("Running job cycle web-1")
        logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /metrics" 200')
        logging.getLogger("httpx").warning("something odd")
        logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed")

        events = [x["event"] for x in lines(output)]
        assert events == ["something odd", "Run time of job was missed"]

    def test_an_unknown_level_is_refused(self) -> None:
        with pytest.raises(ValueError, match="loud"):
            configure_logging(level="loud")

    def test_reconfiguring_does_not_double_lines(self, output: io.StringIO) -> None:
        configure_logging(stream=output)
        configure_logging(stream=output)

        structlog.get_logger().info("once")

        assert len(lines(output)) == 1


class TestSecrets:
    def test_secret_fields_are_redacted_at_any_depth(self, output: io.StringIO) -> None:
        configure_logging(stream=output)

        structlog.get_logger().info(
            "request_sent",
            token="t0k3n",
            admin_token="adm1n",
            password="hunter2",
            headers={"Authorization": "Bearer abc.def", "Accept": "application/json"},
            config={"cloudpilot": {"client_secret": "s3cr3t", "base_url": "http://127.0.0.1"}},
        )

        [line] = lines(output)
        raw = output.getvalue()
        for secret in ("t0k3n", "adm1n", "hunter2", "abc.def", "s3cr3t"):
            assert secret not in raw
        assert line["token"] == line["admin_token"] == line["password"] == "[REDACTED]"
        assert line["headers"] == {"Authorization": "[REDACTED]", "Accept": "application/json"}
        assert line["config"]["cloudpilot"]["base_url"] == "http://127.0.0.1"

    def test_bearer_credentials_inside_text_are_redacted(self, output: io.StringIO) -> None:
        configure_logging(stream=output)

        structlog.get_logger().warning("call_failed", error="401 for 'Bearer eyJhbGc.x-y_z=='")
        logging.getLogger("uvicorn").info("header was Basic dXNlcjpwYXNz")

        first, second = lines(output)
        assert first["error"] == "401 for 'Bearer [REDACTED]'"
        assert second["event"] == "header was Basic [REDACTED]"

    def test_a_traceback_is_redacted_too(self, output: io.StringIO) -> None:
        configure_logging(stream=output)

        try:
            raise RuntimeError("rejected Bearer sekr1t-value")
        except RuntimeError:
            structlog.get_logger().exception("call_crashed")

        [line] = lines(output)
        assert "RuntimeError: rejected Bearer [REDACTED]" in line["exception"]
        assert "sekr1t" not in output.getvalue()

    def test_where_a_secret_lives_is_not_a_secret(self, output: io.StringIO) -> None:
        configure_logging(stream=output)

        structlog.get_logger().info("config_loaded", token_file="/var/run/secrets/healer/t")

        assert lines(output)[0]["token_file"] == "/var/run/secrets/healer/t"

    @pytest.mark.parametrize(
        ("key", "secret"),
        [
            ("token", True),
            ("admin_token", True),
            ("Authorization", True),
            ("x-api-key", True),
            ("client_secret", True),
            ("db.password", True),
            ("token_file", False),
            ("admin_token_file", False),
            ("tokens_used", False),
            ("app_id", False),
            ("reason", False),
        ],
    )
    def test_which_field_names_count_as_secrets(self, key: str, secret: bool) -> None:
        assert is_secret_key(key) is secret

    def test_redact_keeps_the_container_types(self) -> None:
        assert redact(("Bearer x", ["Basic y"])) == ("Bearer [REDACTED]", ["Basic [REDACTED]"])


class TestTests:
    def test_capture_logs_still_works_after_configuration(self, output: io.StringIO) -> None:
        # Other tests assert on logs with capture_logs; a cached logger would bypass it.
        configure_logging(stream=output)
        log = structlog.get_logger("healer.engine")
        log.info("first_use")

        with capture_logs() as captured:
            log.info("captured_event", app_id="web-1")

        assert captured == [{"event": "captured_event", "app_id": "web-1", "log_level": "info"}]
