"""``healer plan`` and ``healer history`` as people run them, against a simulator on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import free_port

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


def write_config(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_plan_lists_an_app_it_could_not_observe_with_the_reason_and_exits_1(
    world: tuple[Simulator, Path, str],
) -> None:
    _, config, _ = world

    done = healer("plan", "--config", str(config), "--app", "nope")

    assert done.returncode == 1, done.stdout + done.stderr
    header, row = done.stdout.splitlines()[:2]
    assert header.split() == ["APP", "INSTANCE", "POLICY", "ACTION", "DECISION", "REASON", "DETAIL"]
    assert row.split()[:6] == ["nope", "-", "-", "-", "skipped", "stale_snapshot"]
    # The simulator answers 404 for an app it does not have; each missing piece says so.
    assert "instance_status: " in row and "404" in row
    assert "1 of 1 app(s) could not be observed" in done.stderr


def test_plan_exits_1_when_cloudpilot_is_down(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(EAGER_RESTART, encoding="utf-8")
    config = write_config(
        tmp_path / "healer.yaml",
        f"cloudpilot: {{base_url: 'http://127.0.0.1:{free_port()}', query_retries: 0}}",
        "enrollment: {apps: [app-0001, app-0002]}",
        f"policy_dir: '{tmp_path / 'policies'}'",
        f"store_url: 'sqlite:///{tmp_path / 'healer.db'}'",
    )

    done = healer("plan", "--config", str(config))

    assert done.returncode == 1
    rows = done.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["app-0001", "app-0002"]
    assert all("skipped" in r and "ConnectError" in r for r in rows)
    assert "nothing to do" not in done.stdout


@pytest.mark.parametrize("store", ["mysql://x", "DIRECTORY"])
def test_plan_with_an_unusable_store_names_store_url_and_exits_2(
    tmp_path: Path, store: str
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(EAGER_RESTART, encoding="utf-8")
    if store == "DIRECTORY":
        store = f"sqlite:///{tmp_path}"
    config = write_config(
        tmp_path / "healer.yaml",
        f"policy_dir: '{tmp_path / 'policies'}'",
        "enrollment: {apps: [app-0001]}",
        f"store_url: '{store}'",
    )

    done = healer("plan", "--config", str(config))

    assert done.returncode == 2
    assert done.stderr.startswith("healer plan: store_url: ")
    assert "Traceback" not in done.stderr


def test_plan_does_not_create_a_missing_sqlite_ledger(
    world: tuple[Simulator, Path, str],
) -> None:
    _, config, iid = world
    db = config.parent / "healer.db"

    done = healer("plan", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert not db.exists()
    assert "planning against an empty ledger" in done.stderr
    assert iid in done.stdout


def test_plan_help_says_what_it_reads_and_what_its_exit_status_means() -> None:
    done = healer("plan", "--help")

    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "does not exist is not created" in text
    assert "1 when any app could not be observed" in text


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


def test_history_refuses_a_since_too_long_to_compute(tmp_path: Path) -> None:
    config = write_config(tmp_path / "healer.yaml", f"store_url: 'sqlite:///{tmp_path / 'h.db'}'")

    done = healer("history", "--config", str(config), "--since", "99999999999999999999999h")

    assert done.returncode == 2
    assert done.stderr.startswith("healer history: --since: ")
    assert "too long" in done.stderr


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_history_refuses_a_limit_below_one(tmp_path: Path, limit: str) -> None:
    config = write_config(tmp_path / "healer.yaml", f"store_url: 'sqlite:///{tmp_path / 'h.db'}'")

    done = healer("history", "--config", str(config), "--limit", limit)

    assert done.returncode == 2
    assert "--limit: must be at least 1" in done.stderr


def test_history_on_a_store_that_does_not_exist_says_so_and_creates_nothing(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-folder" / "healer.db"
    config = write_config(tmp_path / "healer.yaml", f"store_url: 'sqlite:///{missing}'")

    done = healer("history", "--config", str(config))

    assert done.returncode == 2
    assert done.stderr.startswith(f"healer history: store_url: no ledger at {missing}")
    assert not missing.parent.exists()


def test_history_piped_into_head_stops_quietly(tmp_path: Path) -> None:
    db = tmp_path / "healer.db"
    at = datetime.now(UTC) - timedelta(minutes=5)

    async def seed() -> None:
        store = await Store.open(f"sqlite:///{db}")
        for n in range(600):
            row = ActionRow(
                app_id="a",
                instance_id=f"a.{n}",
                policy="p" * 200,
                action="restart",
                params={},
                issued_at=at,
                deadline=at + timedelta(minutes=5),
            )
            await store.issue_action(row)
        await store.close()

    asyncio.run(seed())
    config = write_config(tmp_path / "healer.yaml", f"store_url: 'sqlite:///{db}'")
    exe = str(Path(sys.executable).with_name("healer"))
    args = [exe, "history", "--config", str(config), "--json", "--limit", "600"]

    # 600 lines of over 300 bytes do not fit a pipe's buffer: healer is still
    # writing when the reader goes, as with ``| head -2``.
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = [proc.stdout.readline(), proc.stdout.readline()]
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)

    assert all(line.startswith(b"{") for line in first)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert code == 0
