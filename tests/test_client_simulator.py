"""The CloudPilot client against the simulator over real loopback HTTP, for every call.

The simulator's own state is the truth each answer is held to: what the
client parses must be exactly what the simulator holds (numbers compared as
the decimals of their JSON text), in both answer forms. Its API faults check
the client's verdicts where they matter most: an action whose answer was lost
did happen, and an action refused in the envelope did not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.config import ClientConfig
from healer.cloudpilot.errors import (
    ActionOutcomeUnknown,
    ActionRefused,
    ClientStatusError,
    EnvelopeError,
    MalformedResponse,
    ServerError,
)
from healer.cloudpilot.models import Action, normalize_state
from healer.simulator import ApiFaults, ManualClock, RunningSimulator, Simulator, serve
from healer.simulator.fleet import SimApp, SimInstance

SEED = 7


def exact(payload: Any) -> Any:
    """A payload as the client reads it: JSON text, floats as Decimal."""
    return json.loads(json.dumps(payload), parse_float=Decimal)


def dumped(model: Any, like: dict[str, Any]) -> dict[str, Any]:
    """The model's fields named in ``like``, as plain values."""
    values = model.model_dump()
    return {k: values.get(k) for k in like}


def client(running: RunningSimulator, **config: Any) -> CloudPilotClient:
    config.setdefault("backoff_base", 0.0)
    return CloudPilotClient(ClientConfig(base_url=running.base_url, **config))


def serving_instance(app: SimApp) -> SimInstance:
    """A RUNNING, untouched instance: one any action may be asked for."""
    for inst in app.instances.values():
        busy = inst.op is not None or inst.under_repair or inst.migrating
        if inst.state == "RUNNING" and not (
            busy or inst.frozen or inst.instance_id in app.disabled
        ):
            return inst
    raise AssertionError(f"{app.app_id} has no serving instance")


@pytest.fixture(params=[False, True], ids=["top_level", "envelope"])
async def running(request: pytest.FixtureRequest) -> AsyncIterator[RunningSimulator]:
    sim = Simulator.generate(apps=5, seed=SEED, clock=ManualClock(), envelope=request.param)
    # One app without a budget, as a real fleet has: CloudPilot answers min_usable_info null.
    sim.apps[sim.app_ids[-1]].budget = None
    async with serve(sim) as served:
        yield served


class TestEveryQueryReadsTheSimulatorsTruth:
    async def test_every_query_for_every_app_matches_the_simulator(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        async with client(running) as cp:
            for app_id in sim.app_ids:
                app = sim.apps[app_id]

                meta = await cp.app_meta(app_id)
                assert dumped(meta, app.meta) == exact(app.meta)

                budget = await cp.min_usable(app_id)
                truth = exact(sim.min_usable(app_id))["min_usable_info"]
                if truth is None:
                    assert budget is None
                else:
                    assert budget is not None
                    assert budget.model_dump(exclude_none=True) == truth

                limits = await cp.hard_limits(app_id)
                assert dumped(limits, app.hard_limits) == exact(app.hard_limits)

                disabled = await cp.disabled(app_id)
                assert sorted(disabled) == sorted(app.disabled)

                infos = await cp.instance_info(app_id)
                raw = exact(sim.instance_info(app_id))["instance_info_list"]
                assert [dumped(i, r) for i, r in zip(infos, raw, strict=True)] == raw
                assert {i.instance_id for i in infos} == set(app.instances)

                status = await cp.instance_status(app_id)
                assert status.total_num == len(app.instances)
                counts = {s: b.value for s, b in status.status_instance_top_five.items() if b.value}
                expected: dict[str, int] = {}
                for inst in app.instances.values():
                    state = normalize_state(inst.state)
                    expected[state] = expected.get(state, 0) + 1
                assert counts == expected
                for state, bucket in status.status_instance_top_five.items():
                    assert len(bucket.top_five_list) == min(bucket.value, 5)
                    for name in bucket.top_five_list:
                        assert normalize_state(app.instances[name].state) == state

                events = await cp.events(app_id)
                assert events == []

    async def test_the_status_filter_narrows_the_states(self, running: RunningSimulator) -> None:
        app_id = running.sim.app_ids[0]
        running.sim.inject_fault("unknown", app_id)
        async with client(running) as cp:
            only_running = await cp.instance_status(app_id, "RUNNING")
            not_running = await cp.instance_status(app_id, "!RUNNING")
            everything = await cp.instance_status(app_id, "ALL")

        assert set(only_running.status_instance_top_five) == {"RUNNING"}
        assert "RUNNING" not in not_running.status_instance_top_five
        assert not_running.status_instance_top_five["UNKNOWN"].value == 1
        assert set(everything.status_instance_top_five) >= {"RUNNING", "UNKNOWN"}

    async def test_an_address_names_its_instance_and_an_unknown_address_none(
        self, running: RunningSimulator
    ) -> None:
        app_id = running.sim.app_ids[1]
        async with client(running) as cp:
            infos = await cp.instance_info(app_id)
            for info in infos[:3]:
                assert info.host_ip is not None and info.main_port is not None
                found = await cp.instance_by_addr(app_id, info.host_ip, info.main_port)
                assert found == info.instance_id
            nobody = await cp.instance_by_addr(app_id, "127.0.0.254", 1)

        assert nobody is None

    async def test_an_injected_fault_shows_as_a_firing_event(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        [(_, iid)] = sim.inject_fault("process_down", app_id)
        inst = sim.apps[app_id].instances[iid]
        async with client(running) as cp:
            events = await cp.events(app_id)

        [event] = events
        assert event.name == "proc_dead"
        assert event.firing
        assert event.instance_id == iid or (event.host_ip, event.port) == (
            inst.host_ip,
            inst.main_port,
        )


class TestActionsAgainstTheSimulator:
    async def test_a_restart_is_answered_seen_restarting_then_running_and_counted(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        iid = serving_instance(sim.apps[app_id]).instance_id
        async with client(running) as cp:
            result = await cp.restart(app_id, [iid], replica="healer-a")
            during = await cp.instance_status(app_id, "!RUNNING")
            sim.advance(sim.settings.durations.restart + 0.1)
            after = await cp.instance_status(app_id, "!RUNNING")

        assert (result.success_instances, result.failed_instances, result.unknown_instances) == (
            [iid],
            [],
            [],
        )
        assert during.status_instance_top_five["RESTARTING"].top_five_list == [iid]
        assert after.status_instance_top_five.get("RESTARTING") is None or (
            after.status_instance_top_five["RESTARTING"].value == 0
        )
        assert sim.state_of(app_id, iid) == "RUNNING"
        report = sim.report()
        assert report["actions"]["restart"] == {"success": 1}
        assert report["actions_by_replica"]["healer-a"] == {"restart": 1}

    @pytest.mark.parametrize("action", list(Action))
    async def test_every_action_answers_with_lists_covering_what_was_asked(
        self, running: RunningSimulator, action: Action
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        iid = serving_instance(sim.apps[app_id]).instance_id
        async with client(running) as cp:
            result = await cp.act(action, app_id, [iid, "no-such-instance"])

        assert "no-such-instance" in result.failed_instances
        assert sorted(result.success_instances + result.failed_instances) == sorted(
            [iid, "no-such-instance"]
        )
        assert result.unknown_instances == []
        assert sum(sim.report()["actions"][action.value].values()) == 2


class TestTheSimulatorsApiFaults:
    async def test_a_required_token_is_sent_and_a_wrong_one_is_a_permanent_error(self) -> None:
        sim = Simulator.generate(apps=1, seed=SEED, clock=ManualClock(), token="t-123")
        async with serve(sim) as running:
            app_id = sim.app_ids[0]
            async with client(running, token="t-123") as cp:
                assert (await cp.app_meta(app_id)).app_id == app_id
            async with client(running, token="wrong") as cp:
                with pytest.raises(ClientStatusError) as caught:
                    await cp.app_meta(app_id)

        assert caught.value.status == 401
        assert sim.report()["requests"]["app_meta"] == 2

    async def test_error_pages_are_retried_then_raised_and_an_action_is_unknown(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        iid = serving_instance(sim.apps[app_id]).instance_id
        sim.api_faults = ApiFaults(error_rate=1.0, error_status=502)
        async with client(running, query_retries=2) as cp:
            with pytest.raises(ServerError):
                await cp.disabled(app_id)
            with pytest.raises(ActionOutcomeUnknown) as caught:
                await cp.restart(app_id, [iid])

        assert sim.report()["requests"]["disabled"] == 3
        assert sim.report()["requests"]["restart"] == 1
        assert caught.value.instance_ids == [iid]

    async def test_a_truncated_answer_to_an_action_that_ran_is_an_unknown_outcome(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        iid = serving_instance(sim.apps[app_id]).instance_id
        sim.api_faults = ApiFaults(malformed_rate=1.0)
        async with client(running) as cp:
            with pytest.raises(MalformedResponse):
                await cp.instance_info(app_id)
            with pytest.raises(ActionOutcomeUnknown):
                await cp.restart(app_id, [iid])

        # The simulator did restart it: "unknown" was the truthful verdict.
        assert sim.state_of(app_id, iid) == "RESTARTING"

    async def test_an_envelope_error_on_an_action_is_a_refusal_and_nothing_ran(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        iid = serving_instance(sim.apps[app_id]).instance_id
        sim.api_faults = ApiFaults(envelope_error_rate=1.0)
        async with client(running) as cp:
            with pytest.raises(EnvelopeError):
                await cp.app_meta(app_id)
            with pytest.raises(ActionRefused) as caught:
                await cp.stop(app_id, [iid])

        assert caught.value.instance_ids == [iid]
        assert sim.state_of(app_id, iid) == "RUNNING"
        assert sim.report()["actions"]["stop"] == {"envelope_error": 1}

    async def test_an_answer_that_comes_too_late_leaves_the_action_unknown_though_it_ran(
        self, running: RunningSimulator
    ) -> None:
        sim = running.sim
        app_id = sim.app_ids[2]
        iid = serving_instance(sim.apps[app_id]).instance_id
        sim.api_faults = ApiFaults(timeout_rate=1.0, hang=1.0)
        async with client(running, read_timeout=0.2, total_timeout=0.5) as cp:
            with pytest.raises(ActionOutcomeUnknown) as caught:
                await cp.migrate(app_id, [iid])

        assert caught.value.outcome == "timeout"
        assert sim.apps[app_id].instances[iid].migrating
