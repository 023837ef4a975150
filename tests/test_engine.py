"""The engine's sweep against the simulator over loopback, with time driven by hand.

The simulator and the engine share one manual clock, so each test walks
through a fault's life (seen, held for `for`, acted on, healed, verified)
without sleeping. The auditor and the store judge what happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import ClientConfig
from healer.engine.engine import Engine, request_counter
from healer.guard import GuardConfig
from healer.observe.metrics import HealerMetrics
from healer.policy.loader import load_directory, load_text
from healer.simulator import Simulator, serve
from healer.simulator.core import ManualClock
from healer.store import Outcome, Store

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class World:
    sim: Simulator
    clock: ManualClock
    engine: Engine
    store: Store
    metrics: HealerMetrics

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def advance(self, seconds: float) -> None:
        self.sim.advance(seconds)

    def requests(self) -> int:
        return sum(self.sim.report()["requests"].values())


async def make_world(
    tmp_path: Path, apps: int = 6, seed: int = 11, policies_text: str | None = None
) -> AsyncIterator[World]:
    clock = ManualClock()
    sim = Simulator.generate(apps=apps, seed=seed, clock=clock)
    async with serve(sim) as served:
        store = await Store.open(f"sqlite:///{tmp_path / 'healer.db'}")
        metrics = HealerMetrics()
        calls = request_counter(metrics)
        client = CloudPilotClient(ClientConfig(base_url=served.base_url), on_request=calls)
        engine = Engine(
            client=client,
            store=store,
            guard=GuardConfig(),
            metrics=metrics,
            calls=calls,
            poll_interval=timedelta(seconds=5),
            observe_spread=0.0,
            clock=lambda: datetime.fromtimestamp(clock(), UTC),
        )
        if policies_text is None:
            loaded = load_directory(ROOT / "policies")
        else:
            loaded = load_text(policies_text, "inline.yaml")
        assert loaded.ok, loaded.errors
        engine.policies = list(loaded.policies)
        await engine.start()
        try:
            yield World(sim, clock, engine, store, metrics)
        finally:
            await client.aclose()
            await store.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in make_world(tmp_path):
        yield w


def healthy_instance(sim: Simulator) -> tuple[str, str]:
    """An app with several plain RUNNING instances, and one of them."""
    for app_id in sim.app_ids:
        desc = sim.describe(app_id)
        plain = [
            iid
            for iid, i in sorted(desc["instances"].items())
            if i["state"] == "RUNNING"
            and not (i["frozen"] or i["under_repair"] or i["migrating"])
            and iid not in desc["disabled"]
        ]
        if desc["budget"] and desc["available"] - 1 >= desc["required"] and len(plain) >= 3:
            return app_id, plain[0]
    raise AssertionError("the seeded fleet has no app with room in its budget")


QUIET_POLICY = """
name: restart-unknown-elsewhere
select: {app_id: ["not-enrolled-*"]}
when: {status: [UNKNOWN]}
action: restart
"""


async def test_an_app_with_nothing_to_decide_costs_two_calls_per_sweep(tmp_path: Path) -> None:
    async for w in make_world(tmp_path, policies_text=QUIET_POLICY):
        await w.engine.sweep(w.sim.app_ids)  # the first sweep also fetches each app's meta
        before = w.requests()

        w.advance(5)
        result = await w.engine.sweep(w.sim.app_ids)

        assert w.requests() - before == 2 * len(w.sim.app_ids)
        assert result.decisions == ()
        assert w.sim.report()["actions"] == {}


async def test_an_unknown_instance_is_restarted_after_for_and_verified_healed(world: World) -> None:
    app_id, iid = healthy_instance(world.sim)
    world.sim.inject_fault("unknown", app_id, iid)

    # restart-unknown holds for 20s: nothing at first sight.
    first = await world.engine.sweep(world.sim.app_ids)
    assert not [d for d in first.decisions if d.proposal.instance_id == iid]

    world.advance(25)
    second = await world.engine.sweep(world.sim.app_ids)
    mine = [d for d in second.decisions if d.proposal.instance_id == iid]
    assert [(d.proposal.action.value, d.outcome.value) for d in mine] == [("restart", "approved")]
    assert world.sim.state_of(app_id, iid) == "RESTARTING"
    [record] = await world.store.actions(app_id=app_id)
    assert record.outcome is Outcome.IN_FLIGHT

    # The restart ends within seconds; healthy_for is 30s before it counts as healed.
    world.advance(10)
    await world.engine.sweep(world.sim.app_ids)
    world.advance(35)
    await world.engine.sweep(world.sim.app_ids)

    [record] = await world.store.actions(app_id=app_id)
    assert record.outcome is Outcome.HEALED
    assert world.sim.report()["instances_healed"] == 1
    assert world.sim.report()["unsafe_count"] == 0


EAGER_RESTART = """
name: restart-unknown-now
when: {status: [UNKNOWN]}
action: restart
verify: {timeout: 5m}
"""


async def test_an_action_in_flight_is_not_sent_again_while_the_api_still_shows_the_fault(
    tmp_path: Path,
) -> None:
    # No `for`, no cooldown, no rate limit: only the ledger's in-flight record holds it back.
    async for w in make_world(tmp_path, policies_text=EAGER_RESTART):
        w.sim.settings.restart_fail_prob = 1.0  # every restart ends in UNKNOWN again
        app_id, iid = healthy_instance(w.sim)
        w.sim.inject_fault("unknown", app_id, iid)
        await w.engine.sweep(w.sim.app_ids)

        refused = []
        for _ in range(6):
            w.advance(5)
            result = await w.engine.sweep(w.sim.app_ids)
            refused += [d.reason.value for d in result.decisions if d.proposal.instance_id == iid]

        restarts = w.sim.report()["actions"].get("restart", {})
        assert sum(restarts.values()) == 1
        assert refused and set(refused) == {"in_flight"}


async def test_an_incomplete_snapshot_skips_the_app_and_keeps_its_memory(world: World) -> None:
    app_id, iid = healthy_instance(world.sim)
    world.sim.inject_fault("unknown", app_id, iid)
    await world.engine.sweep(world.sim.app_ids)
    held_since = world.engine.memory.apps[app_id]

    world.sim.api_faults.error_rate = 1.0
    world.advance(25)
    result = await world.engine.sweep(world.sim.app_ids)
    world.sim.api_faults.error_rate = 0.0

    assert not result.snapshots[app_id].complete
    assert result.decisions == ()
    assert world.sim.report()["actions"] == {}
    assert world.engine.memory.apps[app_id] == held_since


async def test_plan_decides_without_writing_or_acting(world: World) -> None:
    app_id, iid = healthy_instance(world.sim)
    world.sim.inject_fault("unknown", app_id, iid)
    await world.engine.sweep(world.sim.app_ids)
    world.advance(25)

    planned = await world.engine.sweep(world.sim.app_ids, execute=False)

    assert [d.outcome.value for d in planned.decisions if d.proposal.instance_id == iid] == [
        "approved"
    ]
    assert world.sim.report()["actions"] == {}
    assert await world.store.actions() == []


async def test_a_restarted_engine_remembers_how_long_conditions_have_held(
    tmp_path: Path,
) -> None:
    async for w in make_world(tmp_path):
        app_id, iid = healthy_instance(w.sim)
        w.sim.inject_fault("unknown", app_id, iid)
        await w.engine.sweep(w.sim.app_ids)
        w.advance(15)
        await w.engine.sweep(w.sim.app_ids)

        # A new engine on the same store: 15s held before, 10s more is past `for: 20s`.
        fresh = Engine(
            client=w.engine.client,
            store=w.store,
            guard=GuardConfig(),
            metrics=HealerMetrics(),
            calls=request_counter(None),
            poll_interval=timedelta(seconds=5),
            observe_spread=0.0,
            clock=w.engine.clock,
        )
        fresh.policies = w.engine.policies
        await fresh.start()
        w.advance(10)
        result = await fresh.sweep(w.sim.app_ids)

        mine = [d for d in result.decisions if d.proposal.instance_id == iid]
        assert [d.outcome.value for d in mine] == ["approved"]
