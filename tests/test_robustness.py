"""Bad input anywhere gives a clean error naming what was wrong, never a traceback or a 500."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing
import uvicorn
from pydantic import SecretStr

from healer.cli import main
from healer.config import ConfigError, load_config
from healer.observe.http import build_http_app

ADMIN = "admin-token-for-tests"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class StubBackend:
    """Just enough daemon for the HTTP layer: remembers what it was asked."""

    def __init__(self) -> None:
        self.action_filters: list[dict[str, Any]] = []
        self.suspended = {"restart-unknown"}

    def ready(self) -> bool:
        return True

    def alive(self) -> bool:
        return True

    async def actions(self, **filters: Any) -> list[dict[str, Any]]:
        self.action_filters.append(filters)
        return []

    async def pause(
        self, app_id: str | None, who: str, why: str, until: datetime
    ) -> dict[str, Any]:
        return {"paused": app_id or "*", "id": 1, "until": until.isoformat()}

    async def resume(self, app_id: str | None, who: str) -> dict[str, Any]:
        return {"resumed": app_id or "*", "pauses_removed": 0}

    async def resume_policy(self, name: str, who: str) -> dict[str, Any]:
        resumed = name in self.suspended
        self.suspended.discard(name)
        return {"policy": name, "resumed": resumed}

    def render_metrics(self) -> tuple[bytes, str]:
        return b"", "text/plain"

    def enrolled(self, app_id: str) -> bool:
        return app_id.startswith("app-")

    async def remove_silence(self, silence_id: int, who: str) -> dict[str, Any]:
        return {"id": silence_id, "removed": False}

    def status(self, app_id: str | None) -> dict[str, Any]:
        if app_id == "boom":
            raise RuntimeError("a bug in the status page")
        return {"apps": {}}


@pytest.fixture
def backend() -> StubBackend:
    return StubBackend()


@pytest.fixture
async def api(backend: StubBackend) -> AsyncIterator[httpx.AsyncClient]:
    """healer's HTTP app served by uvicorn on a loopback port, and a client for it."""
    app = build_http_app(backend, SecretStr(ADMIN), now=lambda: NOW)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "server stopped at start"
        await asyncio.sleep(0.01)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
        yield client
    server.should_exit = True
    await task
    sock.close()


def _pause_body(**extra: Any) -> dict[str, Any]:
    return {"app_id": "app-0001", "who": "alice", "why": "maintenance", **extra}


class TestHttpApi:
    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("/v1/pause", _pause_body(app_id="", **{"for": "1h"}), "app_id"),
            ("/v1/pause", _pause_body(app_id="app 1", **{"for": "1h"}), "app_id"),
            ("/v1/pause", _pause_body(app_id="x" * 300, **{"for": "1h"}), "app_id"),
            ("/v1/pause", _pause_body(app_id="typo-0001", **{"for": "1h"}), "app_id"),
            ("/v1/pause", _pause_body(**{"for": "0s"}), "for"),
            ("/v1/resume", {"app_id": "", "who": "alice"}, "app_id"),
        ],
    )
    async def test_a_pause_or_resume_that_would_not_do_what_it_says_is_a_422(
        self, api: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
    ) -> None:
        # An empty app id once answered "paused: *" while pausing nothing at all.
        r = await api.post(path, json=body)

        assert r.status_code == 422, r.text
        assert [f["field"] for f in r.json()["fields"]] == [field]

    @pytest.mark.parametrize(
        ("method", "path", "status"),
        [
            ("DELETE", "/v1/silences/" + "5" * 5000, 404),
            ("DELETE", "/v1/silences/-1", 404),
            ("DELETE", "/v1/silences/abc", 404),
            ("GET", "/v1/nothing-here", 404),
            ("GET", "/v1/pause", 405),
        ],
    )
    async def test_every_answer_is_json_even_the_routers_own(
        self, api: httpx.AsyncClient, method: str, path: str, status: int
    ) -> None:
        r = await api.request(method, path, json={"who": "alice"})

        assert r.status_code == status
        assert r.headers["content-type"] == "application/json"
        assert "error" in r.json()

    async def test_a_blank_who_is_a_422(self, api: httpx.AsyncClient) -> None:
        r = await api.post("/v1/pause", json=_pause_body(who="   ", **{"for": "1h"}))

        assert r.status_code == 422
        assert [f["field"] for f in r.json()["fields"]] == ["who"]

    async def test_a_deeply_nested_body_is_a_400_not_a_crash(self, api: httpx.AsyncClient) -> None:
        r = await api.post("/v1/pause", content="[" * 100_000)

        assert r.status_code == 400
        assert r.json() == {"error": "body must be JSON"}

    async def test_a_silence_id_past_the_stores_integers_is_not_found(
        self, api: httpx.AsyncClient
    ) -> None:
        r = await api.request("DELETE", "/v1/silences/" + "9" * 30, json={"who": "alice"})

        assert r.status_code == 404

    async def test_a_bug_behind_an_endpoint_is_a_json_500_and_one_log_line(
        self, api: httpx.AsyncClient
    ) -> None:
        with structlog.testing.capture_logs() as logs:
            r = await api.get("/v1/status", params={"app": "boom"})

        assert r.status_code == 500
        assert r.json()["error"].startswith("internal error")
        assert [e["event"] for e in logs] == ["http_handler_failed"]
        assert logs[0]["path"] == "/v1/status"

    async def test_a_huge_pause_duration_is_a_422_naming_for(self, api: httpx.AsyncClient) -> None:
        r = await api.post("/v1/pause", json=_pause_body(**{"for": "99999999999999999999999h"}))

        assert r.status_code == 422
        [field] = r.json()["fields"]
        assert field["field"] == "for"
        assert "too long" in field["error"]

    async def test_a_huge_since_is_a_400_naming_since(self, api: httpx.AsyncClient) -> None:
        r = await api.get("/v1/actions", params={"since": "99999999999999999999999h"})

        assert r.status_code == 400
        assert r.json()["error"].startswith("since:")
        assert "too long" in r.json()["error"]

    async def test_an_unknown_outcome_is_a_400_listing_the_valid_ones(
        self, api: httpx.AsyncClient, backend: StubBackend
    ) -> None:
        r = await api.get("/v1/actions", params={"outcome": "bogus"})

        assert r.status_code == 400
        error = r.json()["error"]
        assert error.startswith("outcome:")
        for valid in ("issued", "in_flight", "failed", "unknown", "healed", "not_healed"):
            assert valid in error
        assert backend.action_filters == []

    async def test_a_known_outcome_is_passed_on(
        self, api: httpx.AsyncClient, backend: StubBackend
    ) -> None:
        r = await api.get("/v1/actions", params={"outcome": "healed"})

        assert r.status_code == 200
        assert backend.action_filters[0]["outcome"] == "healed"

    @pytest.mark.parametrize("limit", ["0", "-1"])
    async def test_a_limit_below_one_is_a_400(
        self, api: httpx.AsyncClient, backend: StubBackend, limit: str
    ) -> None:
        r = await api.get("/v1/actions", params={"limit": limit})

        assert r.status_code == 400
        assert r.json()["error"] == "limit: must be at least 1"
        assert backend.action_filters == []

    async def test_an_until_more_than_a_week_ahead_is_reported_on_until(
        self, api: httpx.AsyncClient
    ) -> None:
        r = await api.post("/v1/pause", json=_pause_body(until="2026-01-20T00:00:00Z"))

        assert r.status_code == 422
        assert r.json()["fields"] == [{"field": "until", "error": "at most 7d"}]

    async def test_a_for_more_than_a_week_is_reported_on_for(self, api: httpx.AsyncClient) -> None:
        r = await api.post("/v1/pause", json=_pause_body(**{"for": "8d"}))

        assert r.status_code == 422
        assert r.json()["fields"] == [{"field": "for", "error": "at most 7d"}]

    async def test_resuming_a_policy_that_is_not_suspended_is_a_404(
        self, api: httpx.AsyncClient
    ) -> None:
        r = await api.post("/v1/policies/no-such-policy/resume", json={"who": "alice"})

        assert r.status_code == 404
        assert r.json()["error"] == "policy 'no-such-policy' is not suspended"

    async def test_resuming_a_suspended_policy_answers_200_once_then_404(
        self, api: httpx.AsyncClient
    ) -> None:
        first = await api.post("/v1/policies/restart-unknown/resume", json={"who": "alice"})
        second = await api.post("/v1/policies/restart-unknown/resume", json={"who": "alice"})

        assert first.status_code == 200
        assert first.json() == {"policy": "restart-unknown", "resumed": True}
        assert second.status_code == 404


class TestConfiguration:
    def test_a_binary_config_file_is_a_config_error_not_a_traceback(self, tmp_path: Path) -> None:
        path = tmp_path / "healer.yaml"
        path.write_bytes(b"\xff\xfe\x00\x01binary")

        with pytest.raises(ConfigError, match=r"healer\.yaml: not UTF-8 text"):
            load_config(path)

    @pytest.mark.parametrize(
        ("name", "value"),
        [("HEALER_ENROLLMENT__APPS", "app-0003"), ("HEALER_GUARD", "notjson")],
    )
    def test_a_list_or_map_variable_that_is_not_json_is_named(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        monkeypatch.setenv(name, value)

        with pytest.raises(ConfigError) as info:
            load_config(None)

        assert name in str(info.value)
        assert "must be JSON" in str(info.value)

    def test_an_empty_token_from_the_environment_is_refused_naming_the_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HEALER_CLOUDPILOT__TOKEN", "")

        with pytest.raises(ConfigError, match=r"cloudpilot.token: .*empty"):
            load_config(None)

    def test_a_token_with_a_newline_is_refused_without_being_shown(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("HEALER_CLOUDPILOT__TOKEN", "s3cr\nX-Injected: 1")

        with pytest.raises(ConfigError, match=r"cloudpilot.token: .*HTTP header") as info:
            load_config(None)

        assert "s3cr" not in str(info.value)

    @pytest.mark.parametrize("url", ["not a url", "ftp://cloudpilot.example"])
    def test_a_base_url_that_is_not_http_is_refused_naming_the_key(
        self, tmp_path: Path, url: str
    ) -> None:
        path = tmp_path / "healer.yaml"
        path.write_text(f"cloudpilot: {{base_url: '{url}'}}\n")

        with pytest.raises(ConfigError, match=r"cloudpilot.base_url: .*http"):
            load_config(path)

    def test_a_huge_poll_interval_is_refused_as_too_long(self, tmp_path: Path) -> None:
        path = tmp_path / "healer.yaml"
        path.write_text("poll_interval: 99999999999999999999999h\n")

        with pytest.raises(ConfigError, match=r"poll_interval: .*too long"):
            load_config(path)


CASE_POLICY = "inline: [{name: p, when: {status: [UNKNOWN]}, action: restart}]\n"


class TestPolicyCommands:
    def test_validate_names_the_line_of_a_for_too_long(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "p.yaml"
        path.write_text(
            "name: p\nwhen:\n  status: [UNKNOWN]\n"
            "  for: 99999999999999999999999h\naction: restart\n"
        )

        code = main(["validate", str(path)])

        assert code == 1
        assert f"{path}:4:8: when.for: duration" in capsys.readouterr().out

    @pytest.mark.parametrize("where", ["DIRECTORY", "/nonexistent-dir/s.json"])
    def test_schema_to_an_unwritable_place_is_a_clean_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
    ) -> None:
        target = str(tmp_path) if where == "DIRECTORY" else where

        code = main(["schema", "-o", target])

        assert code == 2
        assert capsys.readouterr().err.startswith(f"healer schema: -o {target}: ")


class TestCaseFiles:
    def test_a_step_at_a_time_too_far_ahead_fails_the_case_saying_why(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        case = tmp_path / "case.yaml"
        case.write_text(
            "name: far\n" + CASE_POLICY + "steps:\n  - at: 9999999999w\n    apps: {a: {}}\n"
        )

        code = main(["test", str(case)])

        assert code == 1
        out = capsys.readouterr().out
        assert "steps.0.at" in out and "too long" in out
        assert "0 passed, 1 failed" in out

    def test_an_instance_given_as_a_number_is_a_case_error_naming_app_and_instance(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        case = tmp_path / "case.yaml"
        case.write_text(
            "name: number\n"
            + CASE_POLICY
            + "steps:\n  - at: 0s\n    apps: {a: {instances: {a.1: 5}}}\n    expect: {only: true}\n"
        )

        code = main(["test", str(case)])

        assert code == 1
        out = capsys.readouterr().out
        assert f"{case}:" in out
        assert "app a: instance a.1: expected a mapping of fields, got int" in out

    def test_an_instance_status_the_api_does_not_know_is_accepted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # Left as it is on purpose: a state the engine does not know counts as unhealthy,
        # so a case may describe one (it is not an UNKNOWN, so this policy leaves it).
        case = tmp_path / "case.yaml"
        case.write_text(
            "name: banana\n"
            + CASE_POLICY
            + "steps:\n  - at: 0s\n    apps: {a: {instances: {a.1: {status: BANANA}}}}\n"
            + "    expect: {actions: [], only: true}\n"
        )

        assert main(["test", str(case)]) == 0

    @pytest.mark.parametrize("kind", ["empty file", "comments only", "directory"])
    def test_a_path_with_no_cases_fails(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
    ) -> None:
        target = tmp_path / "cases"
        if kind == "directory":
            target.mkdir()
            (target / "notes.txt").write_text("not a case\n")
        else:
            target.write_text("" if kind == "empty file" else "# nothing yet\n")

        code = main(["test", str(target)])

        assert code == 1
        assert f"healer test: no cases found in {target}" in capsys.readouterr().err

    def test_an_empty_file_beside_a_passing_one_still_fails(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        good = tmp_path / "good.yaml"
        good.write_text(
            "name: ok\n" + CASE_POLICY + "steps:\n  - at: 0s\n    apps: {a: {}}\n"
            "    expect: {actions: [], only: true}\n"
        )
        empty = tmp_path / "empty.yaml"
        empty.write_text("")

        code = main(["test", str(good), str(empty)])

        assert code == 1
        captured = capsys.readouterr()
        assert "1 passed, 0 failed" in captured.out
        assert f"no cases found in {empty}" in captured.err


class TestSimulateArguments:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--port", "70000"], "argument --port: must be from 0 to 65535, got 70000"),
            (["--speed", "0"], "argument --speed: must be above 0, got 0"),
            (["--speed", "-2"], "argument --speed: must be above 0, got -2"),
            (["--speed", "nan"], "argument --speed: must be above 0, got nan"),
            (["--apps", "-1"], "argument --apps: must be at least 1, got -1"),
            (["--fault-rate", "-0.5"], "argument --fault-rate: must be at least 0, got -0.5"),
            (
                ["--restart-fail-prob", "1.5"],
                "argument --restart-fail-prob: must be from 0 to 1, got 1.5",
            ),
            (["--top-n", "0"], "argument --top-n: must be at least 1, got 0"),
        ],
    )
    def test_out_of_range_arguments_are_usage_errors(
        self, capsys: pytest.CaptureFixture[str], args: list[str], message: str
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["simulate", *args])

        assert exited.value.code == 2
        assert message in capsys.readouterr().err

    def test_a_missing_scenario_file_is_a_clean_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        missing = tmp_path / "absent.yaml"

        code = main(["simulate", "--scenario", str(missing)])

        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"healer simulate: --scenario: {missing}: cannot read")

    def test_a_busy_port_is_an_error_and_nothing_is_logged_as_listening(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]

            code = main(["simulate", "--port", str(port), "--apps", "1"])

        assert code == 1
        captured = capsys.readouterr()
        assert f"healer simulate: cannot listen on 127.0.0.1:{port}" in captured.err
        assert "sim_listening" not in captured.out + captured.err
