"""The silence endpoints of healer's HTTP API, against a stub daemon (no network).

``POST /v1/silences`` and ``DELETE /v1/silences/{id}`` are admin writes like
``POST /v1/pause``: 401 without or with a wrong bearer token, 403 when no
admin token is configured, 422 naming the field for a bad body (a bad
selector included). ``GET /v1/silences`` is an open read. The daemon end of
it (a silence refusing an app's actions) is in ``test_e2e_daemon.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from healer.observe.http import build_http_app
from healer.policy.model import Select

ADMIN = "admin-token-for-silence-tests"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
GOOD = {"Authorization": f"Bearer {ADMIN}"}


class StubBackend:
    """Just enough daemon for the silence endpoints: remembers what it was asked."""

    def __init__(self) -> None:
        self.added: list[tuple[Select, str, str, datetime, datetime, str]] = []
        self.active: dict[int, dict[str, Any]] = {}

    async def add_silence(
        self, select: Select, who: str, why: str, start: datetime, until: datetime, tz: str
    ) -> dict[str, Any]:
        self.added.append((select, who, why, start, until, tz))
        silence_id = len(self.added)
        shown = {
            "id": silence_id,
            "select": select.model_dump(mode="json", exclude_none=True),
            "start": start.isoformat(),
            "end": until.isoformat(),
        }
        self.active[silence_id] = shown
        return shown

    async def silences(self) -> list[dict[str, Any]]:
        return list(self.active.values())

    async def remove_silence(self, silence_id: int, who: str) -> dict[str, Any]:
        return {"id": silence_id, "removed": self.active.pop(silence_id, None) is not None}


@pytest.fixture
def backend() -> StubBackend:
    return StubBackend()


def client(backend: StubBackend, token: str | None = ADMIN) -> httpx.AsyncClient:
    app = build_http_app(
        backend,  # type: ignore[arg-type]
        SecretStr(token) if token is not None else None,
        now=lambda: NOW,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture
async def api(backend: StubBackend) -> AsyncIterator[httpx.AsyncClient]:
    async with client(backend) as c:
        yield c


def body(**extra: Any) -> dict[str, Any]:
    return {"select": {"product": "search"}, "who": "alice", "why": "deploy", "for": "2h", **extra}


async def test_adding_a_silence_needs_the_admin_token(
    api: httpx.AsyncClient, backend: StubBackend
) -> None:
    missing = await api.post("/v1/silences", json=body())
    wrong = await api.post("/v1/silences", json=body(), headers={"Authorization": "Bearer nope"})
    not_bearer = await api.post("/v1/silences", json=body(), headers={"Authorization": ADMIN})

    assert [r.status_code for r in (missing, wrong, not_bearer)] == [401, 401, 401]
    assert backend.added == []


async def test_without_an_admin_token_configured_silences_cannot_be_written(
    backend: StubBackend,
) -> None:
    backend.active[1] = {"id": 1}
    async with client(backend, token=None) as api:
        added = await api.post("/v1/silences", json=body(), headers=GOOD)
        removed = await api.request("DELETE", "/v1/silences/1", json={"who": "a"}, headers=GOOD)
        listed = await api.get("/v1/silences")

    assert (added.status_code, removed.status_code, listed.status_code) == (403, 403, 200)
    assert backend.added == [] and 1 in backend.active


async def test_a_good_silence_is_added_with_a_policy_selector_and_its_expiry(
    api: httpx.AsyncClient, backend: StubBackend
) -> None:
    select = {"service_level": [1, 2], "exclude": {"cluster": "bj"}, "exclude_app_ids": "pay-*"}
    r = await api.post("/v1/silences", json=body(select=select), headers=GOOD)

    assert r.status_code == 200, r.text
    assert r.json()["id"] == 1
    ((chosen, who, why, start, until, tz),) = backend.added
    assert chosen == Select.model_validate(select)
    assert (who, why, start, until, tz) == ("alice", "deploy", NOW, NOW + timedelta(hours=2), "UTC")


async def test_a_naive_until_is_read_in_the_silence_time_zone(
    api: httpx.AsyncClient, backend: StubBackend
) -> None:
    payload = {k: v for k, v in body().items() if k != "for"}
    r = await api.post(
        "/v1/silences",
        json={**payload, "until": "2026-01-06T06:00", "timezone": "Asia/Shanghai"},
        headers=GOOD,
    )

    assert r.status_code == 200, r.text
    ((_, _, _, _, until, tz),) = backend.added
    assert until == datetime(2026, 1, 5, 22, 0, tzinfo=UTC)  # 06:00 in Shanghai
    assert tz == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"who": "alice", "why": "no select", "for": "1h"}, "select"),
        (body(select={"prodcut": "search"}), "select.prodcut"),
        (body(select={"app_ids": ["web-*"]}), "select.app_ids"),
        (body(select={"product": []}), "select.product"),
        (body(select={"exclude": {"module": ""}}), "select.exclude.module.0"),
        (body(select="search"), "select"),
        # A null once widened the silence to every app.
        (body(select={"app_id": None}), "select.app_id"),
        (body(select={"exclude": None}), "select.exclude"),
        (body(who=""), "who"),
        (body(**{"for": "soon"}), "for"),
        (body(**{"for": "8d"}), "for"),
        (body(until="2026-01-20T00:00:00Z", **{"for": None}), "until"),
        (body(until="2020-01-01T00:00:00Z", **{"for": None}), "until"),
        (body(timezone="Mars/Olympus"), "timezone"),
        (body(app_id="web-1"), "app_id"),
    ],
)
async def test_a_bad_silence_body_is_a_422_naming_the_field(
    api: httpx.AsyncClient, backend: StubBackend, payload: dict[str, Any], field: str
) -> None:
    payload = {k: v for k, v in payload.items() if v is not None}
    r = await api.post("/v1/silences", json=payload, headers=GOOD)

    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]]
    assert backend.added == []


async def test_active_silences_are_listed_without_a_token_and_removed_with_one(
    api: httpx.AsyncClient, backend: StubBackend
) -> None:
    added = (await api.post("/v1/silences", json=body(), headers=GOOD)).json()

    listed = await api.get("/v1/silences")
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["silences"]] == [added["id"]]

    path = f"/v1/silences/{added['id']}"
    no_token = await api.request("DELETE", path, json={"who": "bob"})
    no_who = await api.request("DELETE", path, json={}, headers=GOOD)
    assert (no_token.status_code, no_who.status_code) == (401, 422)
    assert added["id"] in backend.active

    removed = await api.request("DELETE", path, json={"who": "bob"}, headers=GOOD)
    again = await api.request("DELETE", path, json={"who": "bob"}, headers=GOOD)
    assert (removed.status_code, again.status_code) == (200, 404)
    assert removed.json() == {"id": added["id"], "removed": True}
    assert (await api.get("/v1/silences")).json() == {"silences": []}
