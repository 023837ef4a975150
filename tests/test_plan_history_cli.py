"""``healer plan`` and ``healer history`` as people run them, against a simulator on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from healer.simulator import Simulator, serve_in_thread
from healer.store import ActionRow, Outcome, Store

EAGER_RESTART = """name: restart-unknown-now
when: {status: [UNKNOWN]}
action: restart
"""


def healer(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("healer"))
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Simulator, Path, str]]:
    """A simulator with one UNKNOWN instance, and a config for healer pointing at it."""
    sim = Simulator.generate(apps=3, seed=4)
    app_id = sim.app_ids[0]
    iid = sorted(sim.app(app_id).instances)[0]
    sim.inject_fault("unknown", app_id, iid)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(EAGER_RESTART, encoding="utf-8")
    with serve_in_thread(sim) as served:
        config = tmp_path / "healer.yaml"
        config.write_text(
            "\n".join(
                [
                    f"cloudpilot: {{base_url: '{served.base_url}'}}",
                    f"enrollment: {{apps: {sim.app_ids}}}",
                    f"policy_dir: '{tmp_path / 'policies'}'",
                    f"store_url: 'sqlite:///{tmp_path / 'healer.db'}'",
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        yield sim, config, iid


def test_plan_shows_the_decision_with_its_arithmetic_and_sends_nothing(
    world: tuple[Simulator, Path, str],
) -> None:
    sim, config, iid = world

    done = healer("plan", "--config", str(config))

    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if iid in line]
    assert "restart-unknown-now" in row and "restart" in row
    assert "approved" in row or "refused" in row
    assert "required=" in row and "available=" in row
    assert sim.report()["actions"] == {}


def test_plan_for_one_app_shows_only_that_app(world: tuple[Simulator, Path, str]) -> None:
    sim, config, _ = world
    other = sim.app_ids[1]

    done = healer("plan", "--config", str(config), "--app", other)

    assert done.returncode == 0, done.stderr
    assert sim.app_ids[0] not in done.stdout


def test_history_lists_the_ledger_newest_first_and_filters_by_app(tmp_path: Path) -> None:
    db = tmp_path / "healer.db"
    now = datetime.now(UTC)

    async def seed() -> None:
        store = await Store.open(f"sqlite:///{db}")
        for n, (app_id, ago) in enumerate([("a", 30), ("b", 20), ("a", 10)]):
            at = now - timedelta(minutes=ago)
            row = ActionRow(
                app_id=app_id,
                instance_id=f"{app_id}.{n}",
                policy="p",
                action="restart",
                params={},
                issued_at=at,
                deadline=at + timedelta(minutes=5),
            )
            await store.set_outcome(await store.issue_action(row), Outcome.IN_FLIGHT, at)
        await store.close()

    asyncio.run(seed())
    config = tmp_path / "healer.yaml"
    config.write_text(f"store_url: 'sqlite:///{db}'\n", encoding="utf-8")

    everything = healer("history", "--config", str(config), "--since", "1h")
    only_a = healer("history", "--config", str(config), "--app", "a", "--json")
    recent = healer("history", "--config", str(config), "--since", "15m", "--json")

    assert everything.returncode == 0, everything.stderr
    lines = [line for line in everything.stdout.splitlines()[1:] if line.strip()]
    assert [line.split()[2] for line in lines] == ["a.2", "b.1", "a.0"]
    assert [line.count('"app_id": "a"') for line in only_a.stdout.splitlines()] == [1, 1]
    assert len(recent.stdout.splitlines()) == 1


def test_history_refuses_a_bad_since(tmp_path: Path) -> None:
    config = tmp_path / "healer.yaml"
    config.write_text(f"store_url: 'sqlite:///{tmp_path / 'h.db'}'\n", encoding="utf-8")

    done = healer("history", "--config", str(config), "--since", "yesterday")

    assert done.returncode == 2
    assert "--since" in done.stderr
