"""Contradictory CloudPilot data makes a snapshot incomplete: nothing is done on it.

An ``instance_info_list`` naming one instance twice (RUNNING, then
``proc_state: DEAD``) used to keep whichever record came last, and a restart
was approved on a guess. A negative state count or ``total_num`` is no count
at all. Either way the app is skipped for the sweep (``stale_snapshot``).

CloudPilot is played by ``httpx.MockTransport`` (a narrow test of what the
engine does with one odd answer); the engine, guard and store are real.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import ClientConfig
from healer.cloudpilot.errors import MalformedResponse
from healer.cloudpilot.models import InstanceInfo, InstanceStatus
from healer.engine.engine import Engine, request_counter
from healer.guard import GuardConfig
from healer.observe.metrics import HealerMetrics
from healer.policy.loader import load_text
from healer.snapshot import build_snapshot
from healer.store import Store

APP = "app-1"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

RESTART_DEAD = """
name: restart-dead
when: {status: [RUNNING], proc_state: [DEAD]}
action: restart
"""


def info(iid: str, proc: str = "RUNNING") -> dict[str, Any]:
    return {
        "instance_id": iid,
        "proc_state": proc,
        "container_state": "RUNNING",
        "pass_agent_state": "RUNNING",
    }


def healthy_app() -> dict[str, Any]:
    """Three RUNNING instances, of which one must be kept: room for one restart."""
    return {
        "/res/capacity/getappmeta": {"app_meta": {"app_id": APP, "product": "p"}},
        "/pandora/getappminusable": {
            "min_usable_info": {"replica": 3, "replica_that_at_least_need_to_keep": 1}
        },
        "/feiyun/get/instance": {
            "app_id": APP,
            "total_num": 3,
            "status_instance_top_five": {
                "RUNNING": {"value": 3, "top_five_list": ["i-1", "i-2", "i-3"]}
            },
        },
        "/feiyun/get/disabled": {"disabled_instance_id_list": []},
        "/paas/instance/getinfo": {"instance_info_list": [info("i-1"), info("i-2"), info("i-3")]},
    }


@dataclass
class FakeCloudPilot:
    answers: dict[str, Any]
    actions: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST":
            self.actions.append(path)
            return httpx.Response(200, json={"success_instances": ["i-1"]})
        return httpx.Response(200, json=self.answers[path])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite:///{tmp_path / 'healer.db'}")
    yield opened
    await opened.close()


async def sweep_once(store: Store, cloudpilot: FakeCloudPilot) -> Any:
    metrics = HealerMetrics()
    calls = request_counter(metrics)
    config = ClientConfig(query_retries=0, backoff_base=0.0)
    transport = httpx.MockTransport(cloudpilot)
    async with CloudPilotClient(config, on_request=calls, transport=transport) as client:
        engine = Engine(
            client=client,
            store=store,
            guard=GuardConfig(),
            metrics=metrics,
            calls=calls,
            poll_interval=timedelta(seconds=10),
            observe_spread=0.0,
            clock=lambda: NOW,
        )
        loaded = load_text(RESTART_DEAD, "inline.yaml")
        assert loaded.ok, loaded.errors
        engine.policies = list(loaded.policies)
        await engine.start()
        return await engine.sweep([APP])


class TestThroughTheEngine:
    async def test_a_single_dead_record_is_restarted(self, store: Store) -> None:
        # The control: without the contradiction, the setup does lead to a restart.
        answers = healthy_app()
        answers["/paas/instance/getinfo"]["instance_info_list"][0] = info("i-1", "DEAD")
        cloudpilot = FakeCloudPilot(answers)

        result = await sweep_once(store, cloudpilot)

        assert result.snapshots[APP].complete
        assert [d.proposal.instance_id for d in result.decisions] == ["i-1"]
        assert cloudpilot.actions == ["/feiyun/action/instance/restart"]

    async def test_an_instance_listed_twice_skips_the_app(self, store: Store) -> None:
        answers = healthy_app()
        answers["/paas/instance/getinfo"]["instance_info_list"].append(info("i-1", "DEAD"))
        cloudpilot = FakeCloudPilot(answers)

        with capture_logs() as captured:
            result = await sweep_once(store, cloudpilot)

        snap = result.snapshots[APP]
        assert snap.missing == ("instance_info",)
        assert snap.errors["instance_info"] == "duplicate instance ids: i-1"
        assert result.decisions == ()
        assert cloudpilot.actions == []
        assert "stale_snapshot" in [e["event"] for e in captured]

    @pytest.mark.parametrize(
        ("where", "value"),
        [("total_num", -1), ("count", -2)],
    )
    async def test_a_negative_count_skips_the_app(
        self, store: Store, where: str, value: int
    ) -> None:
        answers = healthy_app()
        answers["/paas/instance/getinfo"]["instance_info_list"][0] = info("i-1", "DEAD")
        status = answers["/feiyun/get/instance"]
        if where == "total_num":
            status["total_num"] = value
        else:
            status["status_instance_top_five"]["UNKNOWN"] = {"value": value, "top_five_list": []}
        cloudpilot = FakeCloudPilot(answers)

        with capture_logs() as captured:
            result = await sweep_once(store, cloudpilot)

        assert "instance_status" in result.snapshots[APP].missing
        assert result.decisions == ()
        assert cloudpilot.actions == []
        assert "stale_snapshot" in [e["event"] for e in captured]


class TestTheClientRefusesNegativeCounts:
    @pytest.mark.parametrize(
        "patch",
        [
            {"total_num": -1},
            {"status_instance_top_five": {"RUNNING": {"value": -3, "top_five_list": []}}},
        ],
    )
    async def test_a_negative_count_is_a_malformed_answer(self, patch: dict[str, Any]) -> None:
        answers = healthy_app()
        body = copy.deepcopy(answers["/feiyun/get/instance"]) | patch
        transport = httpx.MockTransport(lambda _request: httpx.Response(200, json=body))
        config = ClientConfig(query_retries=0)

        async with CloudPilotClient(config, transport=transport) as client:
            with pytest.raises(MalformedResponse, match="greater than or equal to 0"):
                await client.instance_status(APP)


class TestBuildSnapshot:
    def status(self) -> InstanceStatus:
        return InstanceStatus.model_validate(healthy_app()["/feiyun/get/instance"])

    def test_duplicate_instance_ids_make_the_snapshot_incomplete(self) -> None:
        infos = [InstanceInfo.model_validate(info(i)) for i in ("i-1", "i-2", "i-2", "i-3", "i-1")]

        snap = build_snapshot(
            APP,
            NOW,
            meta=None,
            budget=None,
            status=self.status(),
            infos=infos,
            disabled=[],
            events=[],
        )

        assert not snap.complete
        assert "instance_info" in snap.missing
        assert snap.errors["instance_info"] == "duplicate instance ids: i-1, i-2"
        assert snap.instances == {}

    def test_unique_instance_ids_give_every_instance(self) -> None:
        infos = [InstanceInfo.model_validate(info(i)) for i in ("i-1", "i-2", "i-3")]

        snap = build_snapshot(
            APP,
            NOW,
            meta=None,
            budget=None,
            status=self.status(),
            infos=infos,
            disabled=[],
            events=[],
        )

        assert "instance_info" not in snap.missing
        assert sorted(snap.instances) == ["i-1", "i-2", "i-3"]
