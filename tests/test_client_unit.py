"""The CloudPilot client through ``httpx.MockTransport``: forms, errors, retries, actions.

Narrow unit tests: each handler plays one answer of CloudPilot; the loopback
and simulator tests cover the same calls over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from healer.cloudpilot.client import CloudPilotClient
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
from healer.cloudpilot.models import Action

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, on_request: Any = None, **config: Any) -> CloudPilotClient:
    config.setdefault("backoff_base", 0.0)
    return CloudPilotClient(
        ClientConfig(**config), on_request=on_request, transport=httpx.MockTransport(handler)
    )


def answer(body: Any, status: int = 200) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return handle


def raw(content: bytes, status: int = 200, ctype: str = "application/json") -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers={"content-type": ctype})

    return handle


def envelope(data: Any, code: Any = 0, message: str = "ok") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


META = {
    "pass_type": "docker",
    "product": "search",
    "module": "web",
    "app_id": "web-1",
    "cluster": "bj-01",
    "service_level": 1,
    "extend_mask": False,
    "shrink_mask": True,
    "owner": "alice",
}
BUDGET = {
    "instanceControlBudget": {"type": "MinAvailableRatio", "value": 80},
    "minUsable": 0.14,
    "replica": 7,
    "replica_that_at_least_need_to_keep": 1,
}
STATUS = {
    "app_id": "web-1",
    "total_num": "7",
    "status_instance_top_five": {
        "RUNNING": {"value": 5, "top_five_list": ["web-1.0", "web-1.2"]},
        "UNKNOWN": {"value": 1, "top_five_list": ["web-1.1"]},
        "DESTROY": {"value": 1, "top_five_list": ["web-1.6"]},
        "HIBERNATING": {"value": 0, "top_five_list": None},
    },
}
HARD = {
    "cpu": True,
    "cpu_quota": 400,
    "cpu_limit": 4,
    "cpu_multiple": 1.5,
    "memory": 8192,
    "disk": 100,
}
INFO = [
    {
        "instance_id": "web-1.0",
        "host_ip": "127.0.0.11",
        "main_port": 8080,
        "proc_state": "RUNNING",
        "container_state": "RUNNING",
        "pass_agent_state": "DOWN",
        "frozen": False,
        "bsn_disabled": True,
        "under_repair": False,
        "migrating": False,
        "zone": "a",
    }
]
EVENTS = [
    {
        "event_id": "e1",
        "app_id": "web-1",
        "instance_id": "web-1.1",
        "name": "proc_dead",
        "level": "critical",
        "status": "firing",
        "start_time": "2026-12-01T10:00:00Z",
    },
    {
        "event_id": "e2",
        "host_ip": "127.0.0.12",
        "port": 8081,
        "name": "disk_full",
        "status": "resolved",
    },
]


# -- every query, both answer forms ---------------------------------------------------------

QUERIES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("app_meta", {}, {"app_meta": META}),
    ("min_usable", {}, {"min_usable_info": BUDGET}),
    ("instance_status", {}, STATUS),
    ("hard_limits", {}, HARD),
    ("disabled", {}, {"disabled_instance_id_list": ["web-1.3"]}),
    ("instance_info", {}, {"instance_info_list": INFO}),
    ("instance_by_addr", {"host_ip": "127.0.0.12", "port": 8081}, {"instance_id": "web-1.2"}),
    ("events", {}, {"events": EVENTS}),
]


def check_answer(call: str, result: Any) -> None:
    """The values each call's answer must carry, read off the payloads above by hand."""
    if call == "app_meta":
        assert result.product == "search"
        assert result.shrink_mask is True
        assert result.owner == "alice"
    elif call == "min_usable":
        assert result.instanceControlBudget.type == "MinAvailableRatio"
        assert result.instanceControlBudget.value == 80
        assert result.minUsable == Decimal("0.14")
        assert result.replica == 7
    elif call == "instance_status":
        assert result.total_num == 7
        states = result.status_instance_top_five
        assert set(states) == {"RUNNING", "UNKNOWN", "DESTORY", "HIBERNATING"}
        assert states["UNKNOWN"].top_five_list == ["web-1.1"]
        assert states["HIBERNATING"].top_five_list == []
    elif call == "hard_limits":
        assert result.cpu is True
        assert result.cpu_quota == 400
        assert result.model_extra == {"cpu_multiple": Decimal("1.5")}
    elif call == "disabled":
        assert result == ["web-1.3"]
    elif call == "instance_info":
        [info] = result
        assert info.instance_id == "web-1.0"
        assert info.bsn_disabled is True
        assert info.pass_agent_state == "DOWN"
        assert info.model_extra == {"zone": "a"}
    elif call == "instance_by_addr":
        assert result == "web-1.2"
    elif call == "events":
        assert [e.name for e in result] == ["proc_dead", "disk_full"]
        assert result[0].firing and not result[1].firing
        assert result[1].instance_id is None and result[1].port == 8081
    else:
        raise AssertionError(call)


class TestEveryQueryReadsBothAnswerForms:
    @pytest.mark.parametrize(("call", "kwargs", "payload"), QUERIES, ids=[q[0] for q in QUERIES])
    async def test_a_documented_key_at_the_top_level_is_read(
        self, call: str, kwargs: dict[str, Any], payload: dict[str, Any]
    ) -> None:
        async with client_for(answer(payload)) as client:
            result = await getattr(client, call)("web-1", **kwargs)

        check_answer(call, result)

    @pytest.mark.parametrize(("call", "kwargs", "payload"), QUERIES, ids=[q[0] for q in QUERIES])
    async def test_a_documented_key_inside_a_code_zero_envelope_is_read(
        self, call: str, kwargs: dict[str, Any], payload: dict[str, Any]
    ) -> None:
        async with client_for(answer(envelope(payload))) as client:
            result = await getattr(client, call)("web-1", **kwargs)

        check_answer(call, result)

    @pytest.mark.parametrize(("call", "kwargs", "payload"), QUERIES, ids=[q[0] for q in QUERIES])
    async def test_a_non_zero_envelope_code_is_an_envelope_error_naming_call_and_app(
        self, call: str, kwargs: dict[str, Any], payload: dict[str, Any]
    ) -> None:
        async with client_for(answer(envelope(payload, code=1003, message="no such app"))) as c:
            with pytest.raises(EnvelopeError) as caught:
                await getattr(c, call)("web-1", **kwargs)

        assert caught.value.call == call
        assert caught.value.app_id == "web-1"
        assert caught.value.code == 1003
        assert "no such app" in str(caught.value)
        assert call in str(caught.value) and "web-1" in str(caught.value)

    async def test_a_string_zero_code_counts_as_success(self) -> None:
        async with client_for(answer(envelope({"disabled_instance_id_list": []}, code="0"))) as c:
            assert await c.disabled("web-1") == []


class TestRequestsCarryTheDocumentedShape:
    async def test_each_query_gets_its_default_path_and_the_app_id(self) -> None:
        seen: list[tuple[str, str, dict[str, str]]] = []

        def handle(request: httpx.Request) -> httpx.Response:
            seen.append((request.method, request.url.path, dict(request.url.params)))
            return httpx.Response(500)

        async with client_for(handle, query_retries=0) as client:
            for call, kwargs, _ in QUERIES:
                with pytest.raises(ServerError):
                    await getattr(client, call)("web-1", **kwargs)

        assert seen == [
            ("GET", "/res/capacity/getappmeta", {"app_id": "web-1"}),
            ("GET", "/pandora/getappminusable", {"app_id": "web-1"}),
            ("GET", "/feiyun/get/instance", {"app_id": "web-1", "status": "ALL"}),
            ("GET", "/feiyun/get/hardlimit", {"app_id": "web-1"}),
            ("GET", "/feiyun/get/disabled", {"app_id": "web-1"}),
            ("GET", "/paas/instance/getinfo", {"app_id": "web-1"}),
            (
                "GET",
                "/shell/get/instance",
                {"app_id": "web-1", "host_ip": "127.0.0.12", "port": "8081"},
            ),
            ("GET", "/alm/selfhealing/geteventlist", {"app_id": "web-1"}),
        ]

    @pytest.mark.parametrize("status", ["RUNNING", "!RUNNING", "ALL"])
    async def test_the_instance_status_filter_is_passed_as_given(self, status: Any) -> None:
        seen: list[str | None] = []

        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.params.get("status"))
            return httpx.Response(200, json=STATUS)

        async with client_for(handle) as client:
            await client.instance_status("web-1", status=status)

        assert seen == [status]

    @pytest.mark.parametrize("action", list(Action))
    async def test_each_action_posts_app_and_instances_to_its_path(self, action: Action) -> None:
        seen: list[tuple[str, str, Any, str | None]] = []

        def handle(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            seen.append(
                (request.method, request.url.path, body, request.headers.get("x-healer-replica"))
            )
            return httpx.Response(200, json={"success_instances": ["a.1"], "failed_instances": []})

        async with client_for(handle) as client:
            result = await client.act(action, "web-1", ["a.1"], replica="replica-0")
            convenience = await getattr(client, action.value)("web-1", ["a.1"])

        path = f"/feiyun/action/instance/{action.value}"
        body = {"app_id": "web-1", "instance_ids": ["a.1"]}
        assert seen == [("POST", path, body, "replica-0"), ("POST", path, body, None)]
        assert result.success_instances == ["a.1"]
        assert convenience.success_instances == ["a.1"]

    async def test_configured_paths_and_base_url_are_used(self) -> None:
        seen: list[str] = []

        def handle(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(200, json={"disabled_instance_id_list": []})

        config = {"base_url": "http://127.0.0.1:9999/api", "paths": {"disabled": "/v2/disabled"}}
        async with client_for(handle, **config) as client:
            await client.disabled("web-1")

        assert seen == ["http://127.0.0.1:9999/api/v2/disabled?app_id=web-1"]


class TestBudgetsAreExact:
    async def test_fractional_values_arrive_as_the_decimal_of_the_json_text(self) -> None:
        body = b'{"min_usable_info": {"minUsable": 0.14, "replica": 50, "instanceControlBudget": {"type": "MinAvailableRatio", "value": 14.0}}}'  # noqa: E501
        async with client_for(raw(body)) as client:
            budget = await client.min_usable("web-1")

        # 0.14 as a float times 50 is 7.000000000000001; as the JSON text it is exactly 7.
        assert budget.minUsable == Decimal("0.14")
        assert budget.minUsable * 50 == 7
        assert budget.instanceControlBudget is not None
        assert budget.instanceControlBudget.value == Decimal("14.0")


# -- bad answers --------------------------------------------------------------------------

BAD_ANSWERS: list[tuple[str, str, Handler]] = [
    (
        "truncated JSON",
        "instance_status",
        raw(b'{"app_id": "web-1", "status_instance_top_five": {"RUN'),
    ),
    (
        "HTML error page with 200",
        "app_meta",
        raw(b"<html><body>Bad Gateway</body></html>", ctype="text/html"),
    ),
    ("a JSON list body", "disabled", answer(["web-1.3"])),
    ("a JSON string body", "events", answer("oops")),
    ("empty body", "min_usable", raw(b"")),
    ("invalid UTF-8", "app_meta", raw(b'{"app_meta": {"product": "\xff\xfe"}}')),
    ("missing documented key", "app_meta", answer({"meta": META})),
    ("missing key inside envelope", "min_usable", answer(envelope({"budget": BUDGET}))),
    ("envelope data null", "instance_info", answer(envelope(None))),
    ("envelope data a list", "hard_limits", answer(envelope([1, 2]))),
    ("app_meta a string", "app_meta", answer({"app_meta": "search/web"})),
    ("min_usable_info a list", "min_usable", answer({"min_usable_info": [80]})),
    (
        "budget type not an object",
        "min_usable",
        answer({"min_usable_info": {"instanceControlBudget": 80}}),
    ),
    ("total_num not a number", "instance_status", answer({**STATUS, "total_num": "seven"})),
    (
        "status buckets a list",
        "instance_status",
        answer({**STATUS, "status_instance_top_five": []}),
    ),
    (
        "status buckets null",
        "instance_status",
        answer({**STATUS, "status_instance_top_five": None}),
    ),
    (
        "a bucket count not a number",
        "instance_status",
        answer({"status_instance_top_five": {"RUNNING": {"value": "many"}}}),
    ),
    ("disabled list a string", "disabled", answer({"disabled_instance_id_list": "web-1.3"})),
    ("disabled id a number", "disabled", answer({"disabled_instance_id_list": [3]})),
    (
        "instance info without id",
        "instance_info",
        answer({"instance_info_list": [{"host_ip": "x"}]}),
    ),
    ("instance info a dict", "instance_info", answer({"instance_info_list": {"web-1.0": {}}})),
    (
        "frozen not a bool",
        "instance_info",
        answer({"instance_info_list": [{"instance_id": "a", "frozen": "maybe"}]}),
    ),
    ("instance by addr a number", "instance_by_addr", answer({"instance_id": 42})),
    ("events an object", "events", answer({"events": {"e1": {}}})),
]


class TestBadAnswersAreTypedErrorsNamingTheCall:
    @pytest.mark.parametrize(
        ("case", "call", "handler"), BAD_ANSWERS, ids=[b[0] for b in BAD_ANSWERS]
    )
    async def test_a_bad_answer_is_a_malformed_response(
        self, case: str, call: str, handler: Handler
    ) -> None:
        kwargs = {"host_ip": "127.0.0.1", "port": 1} if call == "instance_by_addr" else {}
        outcomes: list[str] = []
        async with client_for(handler, on_request=lambda c, o, s: outcomes.append(o)) as client:
            with pytest.raises(MalformedResponse) as caught:
                await getattr(client, call)("web-1", **kwargs)

        error = caught.value
        assert isinstance(error, PermanentError)
        assert (error.call, error.app_id) == (call, "web-1")
        assert str(error).startswith(f"cloudpilot {call} for app web-1: ")
        # Permanent: asked once, not retried.
        assert outcomes == ["malformed"]

    async def test_a_200_with_an_envelope_error_is_an_envelope_error_not_an_empty_model(
        self,
    ) -> None:
        async with client_for(answer({"code": 500, "message": "backend down", "data": None})) as c:
            with pytest.raises(EnvelopeError) as caught:
                await c.instance_info("web-1")

        assert caught.value.api_message == "backend down"

    async def test_an_unreadable_event_is_skipped_and_logged_while_the_rest_are_kept(self) -> None:
        body = {"events": [{"event_id": "bad", "status": "firing"}, EVENTS[0], "noise"]}
        with capture_logs() as logs:
            async with client_for(answer(body)) as client:
                events = await client.events("web-1")

        assert [e.event_id for e in events] == ["e1"]
        skipped = [entry for entry in logs if entry["event"] == "cloudpilot_event_skipped"]
        assert [(s["app_id"], s["index"]) for s in skipped] == [("web-1", 0), ("web-1", 2)]

    async def test_null_lists_are_taken_as_empty(self) -> None:
        async with client_for(answer({"disabled_instance_id_list": None})) as client:
            assert await client.disabled("web-1") == []
        async with client_for(answer({"instance_info_list": None})) as client:
            assert await client.instance_info("web-1") == []
        async with client_for(answer({"events": None})) as client:
            assert await client.events("web-1") == []

    @pytest.mark.parametrize("stated", [None, {}, {"owner": "alice"}])
    async def test_a_budget_stated_as_absent_is_none_not_an_empty_budget(self, stated: Any) -> None:
        async with client_for(answer({"min_usable_info": stated})) as client:
            assert await client.min_usable("web-1") is None

    async def test_no_instance_at_an_address_is_none(self) -> None:
        async with client_for(answer({"instance_id": None})) as client:
            assert await client.instance_by_addr("web-1", "127.0.0.9", 80) is None


# -- status codes and transport failures --------------------------------------------------


def failing(exc: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise exc

    return handle


class TestErrorsAreTypedByWhatTheCallerDoesNext:
    @pytest.mark.parametrize(
        ("status", "error", "outcome"),
        [
            (500, ServerError, "http_5xx"),
            (502, ServerError, "http_5xx"),
            (503, ServerError, "http_5xx"),
            (429, ServerError, "http_429"),
            (400, ClientStatusError, "http_4xx"),
            (401, ClientStatusError, "http_4xx"),
            (404, ClientStatusError, "http_4xx"),
            (302, ClientStatusError, "http_3xx"),
        ],
    )
    async def test_a_status_maps_to_its_error(
        self, status: int, error: type[CloudPilotError], outcome: str
    ) -> None:
        async with client_for(answer({"message": "nope"}, status=status), query_retries=0) as c:
            with pytest.raises(error) as caught:
                await c.app_meta("web-1")

        assert caught.value.outcome == outcome
        assert getattr(caught.value, "status", None) == status
        assert f"HTTP {status}" in str(caught.value)

    @pytest.mark.parametrize(
        ("exc", "error", "outcome"),
        [
            (httpx.ConnectError("refused"), CallConnectionError, "connect_error"),
            (httpx.RemoteProtocolError("peer closed"), CallConnectionError, "connection_lost"),
            (httpx.ReadError("reset"), CallConnectionError, "connection_lost"),
            (httpx.ConnectTimeout("slow"), CallTimeout, "timeout"),
            (httpx.ReadTimeout("slow"), CallTimeout, "timeout"),
            (httpx.PoolTimeout("busy"), CallTimeout, "timeout"),
        ],
    )
    async def test_a_transport_failure_is_temporary_and_chains_the_httpx_error(
        self, exc: Exception, error: type[CloudPilotError], outcome: str
    ) -> None:
        async with client_for(failing(exc), query_retries=0) as client:
            with pytest.raises(error) as caught:
                await client.instance_status("web-1")

        assert isinstance(caught.value, TemporaryError)
        assert caught.value.outcome == outcome
        assert caught.value.__cause__ is exc
        assert (caught.value.call, caught.value.app_id) == ("instance_status", "web-1")

    async def test_a_bad_base_url_is_permanent(self) -> None:
        # Configuration refuses such a URL (test_client_config); the client still maps it.
        config = ClientConfig.model_construct(base_url="ftp://127.0.0.1:1")
        async with CloudPilotClient(config) as client:
            with pytest.raises(PermanentError):
                await client.app_meta("web-1")


# -- retries ------------------------------------------------------------------------------


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler playing ``responses`` in order, and the requests it saw."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        item = responses[len(seen)]
        seen.append(request)
        if isinstance(item, Exception):
            raise item
        return item

    return handle, seen


OK_DISABLED = httpx.Response(200, json={"disabled_instance_id_list": ["web-1.3"]})


class TestQueriesRetryTemporaryErrorsBoundedly:
    async def test_temporary_errors_are_retried_until_an_answer_comes(self) -> None:
        handle, seen = sequence(
            httpx.Response(503), httpx.ReadTimeout("slow"), httpx.ConnectError("x"), OK_DISABLED
        )
        outcomes: list[tuple[str, str]] = []
        with capture_logs() as logs:
            async with client_for(
                handle, on_request=lambda c, o, s: outcomes.append((c, o)), query_retries=3
            ) as client:
                result = await client.disabled("web-1")

        assert result == ["web-1.3"]
        assert len(seen) == 4
        assert [o for _, o in outcomes] == ["http_5xx", "timeout", "connect_error", "ok"]
        retries = [e for e in logs if e["event"] == "cloudpilot_retry"]
        assert [(r["attempt"], r["of"], r["next"]) for r in retries] == [
            (1, 4, "retry"),
            (2, 4, "retry"),
            (3, 4, "retry"),
        ]

    async def test_the_last_temporary_error_is_raised_after_the_retry_bound(self) -> None:
        handle, seen = sequence(*[httpx.Response(502)] * 5)
        with capture_logs() as logs:
            async with client_for(handle, query_retries=2) as client:
                with pytest.raises(ServerError):
                    await client.app_meta("web-1")

        assert len(seen) == 3
        [failed] = [e for e in logs if e["event"] == "cloudpilot_call_failed"]
        assert (failed["attempt"], failed["of"], failed["next"]) == (3, 3, "give_up")

    async def test_permanent_errors_are_not_retried(self) -> None:
        handle, seen = sequence(httpx.Response(404), OK_DISABLED)
        async with client_for(handle, query_retries=3) as client:
            with pytest.raises(ClientStatusError):
                await client.disabled("web-1")

        assert len(seen) == 1

    async def test_backoff_grows_exponentially_within_the_cap_with_jitter(self) -> None:
        handle, _ = sequence(*[httpx.Response(500)] * 5)
        with capture_logs() as logs:
            async with client_for(
                handle, query_retries=4, backoff_base=0.001, backoff_cap=0.004
            ) as client:
                with pytest.raises(ServerError):
                    await client.app_meta("web-1")

        delays = [e["delay"] for e in logs if e["event"] == "cloudpilot_retry"]
        # Ceilings: 0.001, 0.002, 0.004, then capped at 0.004.
        assert len(delays) == 4
        for delay, ceiling in zip(delays, [0.001, 0.002, 0.004, 0.004], strict=True):
            assert 0 <= delay <= ceiling

    async def test_a_broken_metrics_hook_never_breaks_a_call(self) -> None:
        def hook(call: str, outcome: str, seconds: float) -> None:
            raise RuntimeError("metrics down")

        with capture_logs() as logs:
            async with client_for(answer({"disabled_instance_id_list": []}), on_request=hook) as c:
                assert await c.disabled("web-1") == []

        assert [e["event"] for e in logs] == ["cloudpilot_on_request_failed"]


# -- actions ------------------------------------------------------------------------------


class TestActionsAreNeverRetried:
    async def test_the_answer_names_instances_in_neither_list_as_unknown(self) -> None:
        body = envelope({"success_instances": ["a.1"], "failed_instances": ["a.2"]})
        async with client_for(answer(body)) as client:
            result = await client.act(Action.RESTART, "web-1", ["a.1", "a.2", "a.3"])

        assert result.success_instances == ["a.1"]
        assert result.failed_instances == ["a.2"]
        assert result.unknown_instances == ["a.3"]

    async def test_an_answer_with_only_one_list_is_read(self) -> None:
        async with client_for(answer({"success_instances": ["a.1"]})) as client:
            result = await client.restart("web-1", ["a.1", "a.2"])

        assert result.failed_instances == []
        assert result.unknown_instances == ["a.2"]

    @pytest.mark.parametrize(
        ("response", "outcome"),
        [
            (httpx.Response(500), "http_5xx"),
            (httpx.Response(504, text="<html>Gateway Timeout</html>"), "http_5xx"),
            (httpx.ReadTimeout("slow"), "timeout"),
            (httpx.RemoteProtocolError("peer closed"), "connection_lost"),
            (httpx.WriteError("broken pipe"), "connection_lost"),
            (httpx.Response(200, content=b'{"success_instances": ["a'), "malformed"),
            (httpx.Response(200, text="<html>ok</html>"), "malformed"),
            (httpx.Response(200, json={"code": 0, "message": "ok"}), "malformed"),
            (httpx.Response(200, json={"success_instances": "a.1"}), "malformed"),
            (
                httpx.Response(200, json={"code": 7, "data": {"success_instances": ["a.1"]}}),
                "envelope_error",
            ),
        ],
    )
    async def test_a_lost_or_unreadable_answer_is_an_unknown_outcome_for_every_instance(
        self, response: httpx.Response | Exception, outcome: str
    ) -> None:
        handle, seen = sequence(response, httpx.Response(200, json={"success_instances": ["a.1"]}))
        outcomes: list[str] = []
        async with client_for(
            handle, on_request=lambda c, o, s: outcomes.append(o), query_retries=3
        ) as client:
            with pytest.raises(ActionOutcomeUnknown) as caught:
                await client.act(Action.MIGRATE, "web-1", ["a.1", "a.2"])

        assert len(seen) == 1
        assert outcomes == [outcome]
        error = caught.value
        assert isinstance(error, TemporaryError)
        assert error.instance_ids == ["a.1", "a.2"]
        assert (error.call, error.app_id, error.outcome) == ("migrate", "web-1", outcome)
        assert isinstance(error.__cause__, CloudPilotError)

    @pytest.mark.parametrize(
        ("response", "outcome"),
        [
            (httpx.Response(400, json={"message": "bad instance"}), "http_4xx"),
            (httpx.Response(403), "http_4xx"),
            (
                httpx.Response(200, json=envelope(None, code=40001, message="frozen")),
                "envelope_error",
            ),
            (
                httpx.Response(
                    200, json=envelope({"success_instances": [], "failed_instances": ["a.1"]}, 9)
                ),
                "envelope_error",
            ),
        ],
    )
    async def test_a_clear_refusal_means_failed_on_every_instance(
        self, response: httpx.Response, outcome: str
    ) -> None:
        handle, seen = sequence(response)
        async with client_for(handle) as client:
            with pytest.raises(ActionRefused) as caught:
                await client.act(Action.DELETE, "web-1", ["a.1"])

        assert len(seen) == 1
        assert isinstance(caught.value, PermanentError)
        assert caught.value.instance_ids == ["a.1"]
        assert caught.value.outcome == outcome

    @pytest.mark.parametrize(
        "response",
        [
            httpx.ConnectError("refused"),
            httpx.ConnectTimeout("slow"),
            httpx.PoolTimeout("busy"),
            httpx.Response(429),
        ],
    )
    async def test_an_action_that_never_left_is_not_sent(
        self, response: httpx.Response | Exception
    ) -> None:
        handle, seen = sequence(response, httpx.Response(200, json={"success_instances": ["a.1"]}))
        with capture_logs() as logs:
            async with client_for(handle) as client:
                with pytest.raises(ActionNotSent) as caught:
                    await client.act(Action.STOP, "web-1", ["a.1"])

        assert len(seen) == 1
        assert isinstance(caught.value, TemporaryError)
        assert caught.value.instance_ids == ["a.1"]
        [failed] = [e for e in logs if e["event"] == "cloudpilot_action_failed"]
        assert failed["verdict"] == "ActionNotSent"
        assert failed["call"] == "stop"

    async def test_an_action_with_no_instances_is_refused_before_sending(self) -> None:
        handle, seen = sequence()
        async with client_for(handle) as client:
            with pytest.raises(ValueError, match="no instance ids"):
                await client.act(Action.RESTART, "web-1", [])

        assert seen == []
