"""The store on both backends: every test runs on an SQLite file and on PostgreSQL.

PostgreSQL tests get a schema of their own (created fresh, dropped after), so
that runs never see each other's rows; the store reaches it through
``search_path`` in the URL, the way a deployment with its own schema would.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from healer.store import (
    LATEST_VERSION,
    ActionRow,
    DecisionRow,
    InvalidTransition,
    Outcome,
    Store,
    StoreConfigError,
    StoreVersionError,
    UnknownAction,
    normalize_url,
)
from healer.store import schema as store_schema
from healer.store.migrations import STEPS, Step, migrate
from healer.store.store import _create_engine

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def action_row(
    app: str = "web-1",
    instance: str = "web-1.0",
    *,
    policy: str = "restart-unknown",
    action: str = "restart",
    issued: float = 0,
    deadline: float = 10,
) -> ActionRow:
    return ActionRow(
        app_id=app,
        instance_id=instance,
        policy=policy,
        action=action,
        params={},
        issued_at=at(issued),
        deadline=at(deadline),
        fault_seen_at=at(issued - 3),
        replica="healer-0",
        arithmetic={"required": 6, "available": 7},
    )


def refusal(
    minutes: float, reason: str = "budget", instance: str = "web-1.2", app: str = "web-1"
) -> DecisionRow:
    return DecisionRow(
        at=at(minutes),
        app_id=app,
        instance_id=instance,
        policy="migrate-agent-down",
        action="migrate",
        decision="refused",
        reason=reason,
        arithmetic={"required": 6, "available": 6, "cost": 1},
        matched=[{"condition": "pass_agent_state", "held_for": 300.0}],
    )


def sync_engine(url: str) -> sa.Engine:
    """A plain synchronous engine on the same database, to look behind the store's back."""
    parsed = normalize_url(url)
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return sa.create_engine(parsed.set(drivername=driver))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/healer.db"
        return

    dsn = request.getfixturevalue("pg_dsn")
    name = f"healer_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(dsn)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    url = sa.make_url(dsn).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    """The store's own kind of engine, without the migrations run."""
    created = _create_engine(normalize_url(store_url))
    try:
        yield created
    finally:
        await created.dispose()


def applied_versions(url: str) -> list[int]:
    eng = sync_engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.text("SELECT version FROM schema_version ORDER BY version"))
            return [r[0] for r in rows]
    finally:
        eng.dispose()


# -- URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///var/lib/healer.db", "sqlite+aiosqlite:///var/lib/healer.db"),
        ("sqlite+aiosqlite:///h.db", "sqlite+aiosqlite:///h.db"),
        ("postgresql://u@127.0.0.1/db", "postgresql+psycopg://u@127.0.0.1/db"),
        ("postgres://u@127.0.0.1/db", "postgresql+psycopg://u@127.0.0.1/db"),
        ("postgresql+psycopg://u@127.0.0.1/db", "postgresql+psycopg://u@127.0.0.1/db"),
    ],
)
def test_store_urls_are_normalized_to_the_async_drivers(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "given", ["mysql://u@127.0.0.1/db", "postgresql+asyncpg://u@127.0.0.1/db", "not a url"]
)
def test_an_unsupported_store_url_is_a_configuration_error(given: str) -> None:
    with pytest.raises(StoreConfigError):
        normalize_url(given)


# -- schema versions ----------------------------------------------------------


async def test_opening_an_empty_store_creates_every_table_at_the_latest_version(
    store_url: str,
) -> None:
    opened = await Store.open(store_url)
    await opened.close()

    assert opened.schema_version == LATEST_VERSION
    assert applied_versions(store_url) == list(range(1, LATEST_VERSION + 1))
    eng = sync_engine(store_url)
    tables = set(sa.inspect(eng).get_table_names())
    eng.dispose()
    assert tables >= set(store_schema.metadata.tables)


async def test_the_tables_the_queries_use_match_what_the_migrations_create(
    store: Store, store_url: str
) -> None:
    eng = sync_engine(store_url)
    inspector = sa.inspect(eng)

    for name, table in store_schema.metadata.tables.items():
        created = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
        declared = {c.name: c.nullable for c in table.columns}
        assert created == declared, name
    eng.dispose()


async def test_reopening_a_store_keeps_its_data_and_applies_no_step_twice(store_url: str) -> None:
    first = await Store.open(store_url)
    await first.set_state("fleet_brake", {"engaged": True})
    await first.close()

    second = await Store.open(store_url)
    state = await second.get_state("fleet_brake")
    await second.close()

    assert state == {"engaged": True}
    assert applied_versions(store_url) == list(range(1, LATEST_VERSION + 1))


async def test_a_store_at_an_older_version_gets_only_the_missing_steps(
    engine: AsyncEngine, store_url: str
) -> None:
    calls: list[int] = []

    def add_notes(conn: sa.Connection) -> None:
        calls.append(1)
        conn.execute(sa.text("CREATE TABLE notes (id INTEGER PRIMARY KEY)"))

    newer = (*STEPS, Step(LATEST_VERSION + 1, "add notes", add_notes))
    await migrate(engine)

    first = await migrate(engine, newer)
    second = await migrate(engine, newer)

    assert first == (LATEST_VERSION, LATEST_VERSION + 1)
    assert second == (LATEST_VERSION + 1, LATEST_VERSION + 1)
    assert calls == [1]
    assert applied_versions(store_url)[-1] == LATEST_VERSION + 1


async def test_a_failing_step_leaves_the_store_at_the_version_before_it(
    engine: AsyncEngine, store_url: str
) -> None:
    def half_done(conn: sa.Connection) -> None:
        conn.execute(sa.text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("step broke")

    await migrate(engine)

    with pytest.raises(RuntimeError, match="step broke"):
        await migrate(engine, (*STEPS, Step(LATEST_VERSION + 1, "broken", half_done)))

    assert applied_versions(store_url) == list(range(1, LATEST_VERSION + 1))
    eng = sync_engine(store_url)
    assert "half_done" not in sa.inspect(eng).get_table_names()
    eng.dispose()


async def test_a_store_newer_than_this_healer_refuses_to_open_with_a_clear_message(
    store_url: str,
) -> None:
    opened = await Store.open(store_url)
    await opened.close()
    eng = sync_engine(store_url)
    with eng.begin() as conn:
        conn.execute(
            sa.insert(store_schema.schema_version).values(
                version=LATEST_VERSION + 1, description="from the future", applied_at=T0
            )
        )
    eng.dispose()

    with pytest.raises(StoreVersionError) as raised:
        await Store.open(store_url)

    message = str(raised.value)
    assert f"schema version {LATEST_VERSION + 1}" in message
    assert f"up to {LATEST_VERSION}" in message
    assert "upgrade healer" in message


async def test_several_replicas_opening_one_empty_store_at_once_migrate_it_once(
    store_url: str,
) -> None:
    stores = await asyncio.gather(*(Store.open(store_url) for _ in range(3)))
    for opened in stores:
        await opened.close()

    assert applied_versions(store_url) == list(range(1, LATEST_VERSION + 1))


async def test_an_sqlite_store_in_a_folder_that_does_not_exist_is_refused_and_not_made(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo" / "healer.db"

    with pytest.raises(StoreConfigError, match="does not exist"):
        await Store.open(f"sqlite:///{missing}")

    assert not missing.parent.exists()


async def test_an_sqlite_store_uses_wal_and_a_busy_timeout(tmp_path: object) -> None:
    opened = await Store.open(f"sqlite:///{tmp_path}/wal.db")
    async with opened._tx(write=False) as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    await opened.close()

    assert mode == "wal"
    assert busy == 10_000


async def test_an_in_memory_sqlite_store_works_for_tests() -> None:
    opened = await Store.open("sqlite://")
    ids = await asyncio.gather(
        *(opened.issue_action(action_row(instance=f"i{n}")) for n in range(5))
    )
    listed = await opened.open_actions()
    await opened.close()

    assert sorted(ids) == [1, 2, 3, 4, 5]
    assert len(listed) == 5


# -- issuing actions ----------------------------------------------------------


async def test_an_issued_action_is_found_again_by_a_new_store_on_the_same_database(
    store_url: str,
) -> None:
    crashed = await Store.open(store_url)
    action_id = await crashed.issue_action(action_row(issued=0, deadline=10))
    # The first daemon never records an outcome: a second one starts on the same store.
    restarted = await Store.open(store_url)

    (found,) = await restarted.open_actions()
    await restarted.close()
    await crashed.close()

    assert found.id == action_id
    assert found.outcome is Outcome.ISSUED
    assert found.in_flight_at(at(9))
    assert not found.in_flight_at(at(10))


async def test_an_issued_action_survives_sigkill_right_after_the_write(store_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from datetime import datetime, timezone, timedelta
        from healer.store import Store, ActionRow

        async def main():
            store = await Store.open({store_url!r})
            t = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
            await store.issue_action(ActionRow("web-1", "web-1.3", "restart-unknown", "restart",
                                               {{}}, t, t + timedelta(minutes=10)))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    restarted = await Store.open(store_url)
    found = await restarted.open_actions()
    await restarted.close()

    assert proc.returncode == -9, stderr.decode()
    assert [(a.instance_id, a.outcome) for a in found] == [("web-1.3", Outcome.ISSUED)]


async def test_several_actions_are_issued_in_one_transaction_with_ids_in_row_order(
    store: Store,
) -> None:
    ids = await store.issue_actions([action_row(instance=f"web-1.{n}") for n in range(4)])

    listed = {a.id: a.instance_id for a in await store.open_actions()}

    assert len(set(ids)) == 4
    assert [listed[i] for i in ids] == ["web-1.0", "web-1.1", "web-1.2", "web-1.3"]


async def test_times_come_back_in_utc_whatever_zone_they_were_written_in(store: Store) -> None:
    beijing = timezone(timedelta(hours=8))
    row = ActionRow(
        "web-1",
        "web-1.0",
        "p",
        "restart",
        {},
        issued_at=datetime(2025, 3, 1, 20, 0, tzinfo=beijing),
        deadline=datetime(2025, 3, 1, 20, 10, tzinfo=beijing),
    )
    await store.issue_action(row)

    (found,) = await store.open_actions()

    assert found.issued_at == T0
    assert found.issued_at.tzinfo == UTC
    assert found.deadline == at(10)


async def test_naive_times_are_refused(store: Store) -> None:
    naive = datetime(2025, 3, 1, 12, 0)

    with pytest.raises(ValueError, match="timezone-aware"):
        await store.issue_action(
            ActionRow("web-1", "web-1.0", "p", "restart", {}, naive, naive + timedelta(minutes=1))
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.active_pauses(naive)


async def test_the_arithmetic_keeps_exact_numbers_as_text(store: Store) -> None:
    row = action_row()
    exact = ActionRow(
        **{
            **{f: getattr(row, f) for f in row.__slots__},
            "arithmetic": {
                "ratio": Decimal("0.14"),
                "share": Fraction(7, 50),
                "verify": timedelta(minutes=2),
                "required": 7,
            },
        }
    )
    await store.issue_action(exact)

    (found,) = await store.open_actions()

    assert found.arithmetic == {"ratio": "0.14", "share": "7/50", "verify": 120.0, "required": 7}


# -- outcomes -----------------------------------------------------------------


async def test_an_action_moves_from_issued_through_in_flight_to_healed(store: Store) -> None:
    action_id = await store.issue_action(action_row())

    await store.set_outcome(action_id, Outcome.IN_FLIGHT, at(0.1))
    in_flight = await store.open_actions()
    await store.set_outcome(action_id, "healed", at(4), detail="RUNNING for 2m")
    (healed,) = await store.actions()

    assert [a.outcome for a in in_flight] == [Outcome.IN_FLIGHT]
    assert healed.outcome is Outcome.HEALED
    assert healed.outcome_at == at(4)
    assert healed.detail == "RUNNING for 2m"
    assert await store.open_actions() == []


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        (["healed"], "in_flight"),
        (["healed", "not_healed"], "healed"),
        (["failed"], "in_flight"),
        (["in_flight", "not_healed"], "healed"),
        (["in_flight"], "issued"),
        (["in_flight"], "failed"),
    ],
)
async def test_an_outcome_the_lifecycle_forbids_is_refused(
    store: Store, path: list[str], forbidden: str
) -> None:
    action_id = await store.issue_action(action_row())
    for outcome in path:
        await store.set_outcome(action_id, outcome, at(1))

    with pytest.raises(InvalidTransition):
        await store.set_outcome(action_id, forbidden, at(2))

    (kept,) = await store.actions()
    assert kept.outcome == path[-1]


async def test_a_heal_that_fails_again_inside_its_probation_becomes_not_healed(
    store: Store,
) -> None:
    action_id = await store.issue_action(action_row())
    await store.set_outcome(action_id, "healed", at(4))

    await store.set_outcome(action_id, "not_healed", at(6), detail="flapped")

    (kept,) = await store.actions()
    assert (kept.outcome, kept.outcome_at, kept.detail) == (Outcome.NOT_HEALED, at(6), "flapped")


async def test_repeating_the_current_outcome_changes_nothing(store: Store) -> None:
    action_id = await store.issue_action(action_row())
    await store.set_outcome(action_id, "healed", at(4), detail="first")

    await store.set_outcome(action_id, "healed", at(5), detail="retry")

    (kept,) = await store.actions()
    assert (kept.outcome_at, kept.detail) == (at(4), "first")


async def test_an_outcome_for_an_unknown_action_is_an_error(store: Store) -> None:
    with pytest.raises(UnknownAction):
        await store.set_outcome(12345, "healed", at(1))


async def test_one_bad_change_in_a_batch_of_outcomes_rolls_back_all_of_them(store: Store) -> None:
    first, second = await store.issue_actions([action_row(instance="a"), action_row(instance="b")])
    await store.set_outcome(second, "failed", at(0.1))

    with pytest.raises(InvalidTransition):
        await store.set_outcomes(
            [(first, "in_flight", at(0.2), None), (second, "healed", at(0.2), None)]
        )

    outcomes = {a.id: a.outcome for a in await store.actions()}
    assert outcomes == {first: Outcome.ISSUED, second: Outcome.FAILED}


async def test_open_actions_past_their_deadline_expire_and_the_rest_stay(store: Store) -> None:
    overdue, unknown_overdue, running, finished = await store.issue_actions(
        [
            action_row(instance="a", deadline=5),
            action_row(instance="b", deadline=5),
            action_row(instance="c", deadline=20),
            action_row(instance="d", deadline=5),
        ]
    )
    await store.set_outcome(unknown_overdue, "unknown", at(0.1))
    await store.set_outcome(finished, "failed", at(0.1))

    expired = await store.expire_overdue(at(5))

    assert expired == sorted([overdue, unknown_overdue])
    assert [a.id for a in await store.open_actions()] == [running]
    (failed,) = await store.actions(outcome="failed")
    assert failed.id == finished


# -- listing actions ----------------------------------------------------------


async def _seed_ledger(store: Store) -> dict[str, int]:
    ids = await store.issue_actions(
        [
            action_row("web-1", "web-1.0", policy="restart-unknown", issued=0),
            action_row(
                "web-1", "web-1.1", policy="migrate-agent-down", action="migrate", issued=10
            ),
            action_row("api-2", "api-2.0", policy="restart-unknown", issued=20),
            action_row("api-2", "api-2.1", policy="restart-unknown", issued=30),
        ]
    )
    names = dict(zip(["w0", "w1", "a0", "a1"], ids, strict=True))
    await store.set_outcome(names["w0"], "healed", at(5))
    await store.set_outcome(names["a0"], "failed", at(20.1))
    return names


async def test_the_ledger_lists_actions_newest_first_and_filters_them(store: Store) -> None:
    n = await _seed_ledger(store)

    def ids(records: list) -> list[int]:
        return [r.id for r in records]

    assert ids(await store.actions()) == [n["a1"], n["a0"], n["w1"], n["w0"]]
    assert ids(await store.actions(app_id="web-1")) == [n["w1"], n["w0"]]
    assert ids(await store.actions(since=at(10), until=at(30))) == [n["a0"], n["w1"]]
    assert ids(await store.actions(outcome="healed")) == [n["w0"]]
    assert ids(await store.actions(outcome=["issued", "failed"])) == [n["a1"], n["a0"], n["w1"]]
    assert ids(await store.actions(policy="migrate-agent-down")) == [n["w1"]]
    assert ids(await store.actions(app_id="api-2", outcome=Outcome.ISSUED)) == [n["a1"]]
    assert ids(await store.actions(instance_id="web-1.0")) == [n["w0"]]
    assert ids(await store.actions(limit=2)) == [n["a1"], n["a0"]]


async def test_attempts_since_count_every_outcome_oldest_first(store: Store) -> None:
    n = await _seed_ledger(store)

    attempts = await store.attempts_since(at(10))

    assert [a.id for a in attempts] == [n["w1"], n["a0"], n["a1"]]
    assert [a.outcome for a in attempts] == [Outcome.ISSUED, Outcome.FAILED, Outcome.ISSUED]


# -- decisions ----------------------------------------------------------------


async def test_decisions_are_stored_with_their_arithmetic_and_listed_newest_first(
    store: Store,
) -> None:
    approved = DecisionRow(at(1), "web-1", "web-1.1", "restart-unknown", "restart", "approved")
    written = await store.record_decisions(
        [refusal(0), approved, refusal(2, app="api-2", instance="api-2.0")]
    )

    everything = await store.decisions()
    web = await store.decisions(app_id="web-1")
    recent = await store.decisions(since=at(1))
    refused = await store.decisions(decision="refused", limit=1)

    assert written == 3
    assert [(d.app_id, d.decision) for d in everything] == [
        ("api-2", "refused"),
        ("web-1", "approved"),
        ("web-1", "refused"),
    ]
    assert [d.at for d in web] == [at(1), at(0)]
    assert [d.at for d in recent] == [at(2), at(1)]
    assert [d.app_id for d in refused] == ["api-2"]
    oldest = everything[-1]
    assert oldest.reason == "budget"
    assert oldest.arithmetic == {"required": 6, "available": 6, "cost": 1}
    assert oldest.matched == [{"condition": "pass_agent_state", "held_for": 300.0}]


async def test_an_identical_refusal_is_written_once_per_dedup_window(store: Store) -> None:
    # Default window: 5 minutes, measured on the decisions' own times.
    first = await store.record_decisions([refusal(0), refusal(1)])
    later = await store.record_decisions([refusal(4.9), refusal(5), refusal(6)])
    other_reason = await store.record_decisions([refusal(6, reason="cooldown")])
    approved = DecisionRow(at(6), "web-1", "web-1.2", "migrate-agent-down", "migrate", "approved")
    approvals = await store.record_decisions([approved, approved])

    assert (first, later, other_reason, approvals) == (1, 1, 1, 2)
    stored = await store.decisions(decision="refused")
    assert [(d.at, d.reason) for d in stored] == [
        (at(6), "cooldown"),
        (at(5), "budget"),
        (at(0), "budget"),
    ]


async def test_refusal_dedup_can_be_turned_off(store_url: str) -> None:
    opened = await Store.open(store_url, decision_dedup=timedelta(0))
    written = await opened.record_decisions([refusal(0), refusal(0), refusal(1)])
    await opened.close()

    assert written == 3


# -- condition memory ---------------------------------------------------------


async def test_condition_memory_is_kept_per_app_and_replaced_whole(store: Store) -> None:
    await store.save_memory("web-1", {"web-1.1": {"status": "2025-03-01T12:00:00Z"}})
    await store.save_memories({"api-2": {"api-2.0": {}}, "web-1": {"web-1.2": {"agent": "t"}}})

    loaded = await store.load_memory()
    await store.forget_memory("api-2")
    after_forget = await store.load_memory()

    assert loaded == {"web-1": {"web-1.2": {"agent": "t"}}, "api-2": {"api-2.0": {}}}
    assert after_forget == {"web-1": {"web-1.2": {"agent": "t"}}}


# -- pauses -------------------------------------------------------------------


async def test_a_pause_holds_until_its_expiry(store: Store) -> None:
    pause_id = await store.add_pause("web-1", "alice", "db migration", at(30), at=at(0))

    during = await store.active_pauses(at(29))
    after = await store.active_pauses(at(30))

    assert [(p.id, p.app_id, p.who, p.why, p.until) for p in during] == [
        (pause_id, "web-1", "alice", "db migration", at(30))
    ]
    assert after == []


async def test_global_and_per_app_pauses_are_ended_separately(store: Store) -> None:
    await store.add_pause(None, "alice", "incident 42", None, at=at(0))
    await store.add_pause("web-1", "bob", "deploy", at(60), at=at(1))

    ended_app = await store.remove_pause("web-1", "carol", at=at(2))
    remaining = await store.active_pauses(at(3))
    ended_global = await store.remove_pause(None, "carol", at=at(4))

    assert ended_app == 1
    assert [(p.app_id, p.until) for p in remaining] == [(None, None)]
    assert ended_global == 1
    assert await store.active_pauses(at(5)) == []


# -- silences -----------------------------------------------------------------


async def test_a_silence_holds_from_its_start_to_its_end(store: Store) -> None:
    selector = {"product": "search", "cluster": "bj"}
    silence_id = await store.add_silence(
        selector, at(10), at(70), "Asia/Shanghai", "alice", "maintenance"
    )

    before, start, end = [await store.active_silences(at(m)) for m in (9, 10, 70)]

    assert before == [] and end == []
    (active,) = start
    assert (active.id, active.selector, active.tz, active.start, active.end) == (
        silence_id,
        selector,
        "Asia/Shanghai",
        at(10),
        at(70),
    )


async def test_a_silence_ended_early_is_no_longer_active(store: Store) -> None:
    silence_id = await store.add_silence({"app_id": "web-1"}, at(0), at(60), "UTC", "a", "b")

    removed = await store.remove_silence(silence_id, "carol", at=at(5))
    removed_again = await store.remove_silence(silence_id, "carol", at=at(6))

    assert (removed, removed_again) == (True, False)
    assert await store.active_silences(at(10)) == []


async def test_a_silence_with_an_unknown_zone_or_no_duration_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="time zone"):
        await store.add_silence({}, at(0), at(60), "Mars/Olympus", "a", "b")
    with pytest.raises(ValueError, match="end after"):
        await store.add_silence({}, at(60), at(60), "UTC", "a", "b")


@pytest.mark.parametrize(
    ("selector", "key"),
    [
        ({"prodcut": "search"}, "selector.prodcut"),
        ({"product": []}, "selector.product"),
        ({"exclude": {"app_ids": ["a"]}}, "selector.exclude.app_ids"),
    ],
)
async def test_a_silence_whose_selector_a_policy_would_refuse_is_refused(
    store: Store, selector: dict[str, object], key: str
) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        await store.add_silence(selector, at(0), at(60), "UTC", "a", "b")
    assert await store.active_silences(at(10)) == []


async def test_a_stored_silence_reaches_the_guard_matching_like_a_policy_select(
    store: Store,
) -> None:
    from healer.cloudpilot.models import AppMeta
    from healer.engine.engine import _silence

    selector = {"product": "search", "exclude": {"cluster": "bj"}, "exclude_app_ids": ["web-9"]}
    await store.add_silence(selector, at(0), at(60), "UTC", "alice", "deploy")
    (record,) = await store.active_silences(at(10))

    silence = _silence(record)

    assert silence.silences("web-1", AppMeta(product="search", cluster="sh"), at(10))
    assert not silence.silences("web-1", AppMeta(product="search", cluster="bj"), at(10))
    assert not silence.silences("web-9", AppMeta(product="search", cluster="sh"), at(10))
    # A missing meta field matches no glob: not selected by product, not excluded by cluster.
    assert not silence.silences("web-1", AppMeta(product=None, cluster="sh"), at(10))
    assert silence.silences("web-1", AppMeta(product="search", cluster=None), at(10))
    assert not silence.silences("web-1", AppMeta(product="search", cluster="sh"), at(60))


def test_a_stored_selector_that_no_longer_reads_silences_every_app() -> None:
    from healer.cloudpilot.models import AppMeta
    from healer.engine.engine import _silence
    from healer.store import SilenceRecord

    def record(selector: dict[str, object]) -> SilenceRecord:
        return SilenceRecord(
            id=7, selector=selector, start=at(0), end=at(60), tz="UTC", who="a", why="b",
            created_at=at(0), removed_at=None, removed_by=None,
        )  # fmt: skip

    # Written before windows and silences shared the policy selector.
    assert _silence(record({"app_ids": ["web-*"]})).silences("web-1", AppMeta(), at(1))
    assert not _silence(record({"app_ids": ["web-*"]})).silences("db-1", AppMeta(), at(1))
    # Unreadable: healer cannot tell which apps were meant, so it does less everywhere.
    assert _silence(record({"prodcut": "x"})).silences("db-1", AppMeta(), at(1))


# -- suspended policies -------------------------------------------------------


async def test_a_suspended_policy_stays_suspended_until_a_person_resumes_it(store: Store) -> None:
    first = await store.suspend_policy("restart-unknown", "4 of 5 not healed", at(0))
    again = await store.suspend_policy("restart-unknown", "still failing", at(10))
    suspended = await store.suspended_policies()
    resumed = await store.resume_policy("restart-unknown", "alice", at=at(20))
    resumed_again = await store.resume_policy("restart-unknown", "alice", at=at(21))

    assert (first, again, resumed, resumed_again) == (True, False, True, False)
    assert suspended == {"restart-unknown": "4 of 5 not healed"}
    assert await store.suspended_policies() == {}
    assert await store.policy_resumptions() == {"restart-unknown": at(20)}


async def test_the_latest_resumption_of_each_policy_is_remembered(store: Store) -> None:
    for suspended, resumed in ((0, 5), (10, 15)):
        await store.suspend_policy("restart-unknown", "x", at(suspended))
        await store.resume_policy("restart-unknown", "alice", at=at(resumed))
    await store.suspend_policy("migrate-agent-down", "y", at(0))

    assert await store.policy_resumptions() == {"restart-unknown": at(15)}


# -- sweep-level state --------------------------------------------------------


async def test_state_values_are_replaced_whole(store: Store) -> None:
    missing = await store.get_state("token_bucket")
    await store.set_state("token_bucket", {"tokens": 5, "at": "2025-03-01T12:00:00Z"})
    await store.set_state("token_bucket", {"tokens": 4})

    assert missing is None
    assert await store.get_state("token_bucket") == {"tokens": 4}


# -- retention ----------------------------------------------------------------


async def test_prune_deletes_what_is_over_and_old_and_keeps_the_rest(store: Store) -> None:
    await store.record_decisions([refusal(0), refusal(10, reason="cooldown"), refusal(30)])
    old_final, old_open, new_final = await store.issue_actions(
        [
            action_row(instance="a", issued=0),
            action_row(instance="b", issued=1),
            action_row(issued=25),
        ]
    )
    await store.set_outcome(old_final, "healed", at(3))
    await store.set_outcome(new_final, "healed", at(27))
    await store.add_pause(None, "a", "expired", at(5), at=at(0))
    await store.add_pause("web-1", "a", "open-ended", None, at=at(0))
    await store.add_silence({}, at(0), at(10), "UTC", "a", "over")
    await store.add_silence({}, at(0), at(90), "UTC", "a", "in force")
    await store.suspend_policy("p1", "x", at(0))
    await store.resume_policy("p1", "alice", at=at(1))
    await store.suspend_policy("p2", "y", at(0))

    deleted = await store.prune(at(20))

    # 2 decisions (at 0 and 10), 1 action (old and healed), 1 pause, 1 silence, 1 suspension.
    assert deleted == 6
    assert [d.at for d in await store.decisions()] == [at(30)]
    assert sorted(a.id for a in await store.actions()) == sorted([old_open, new_final])
    assert [p.why for p in await store.active_pauses(at(21))] == ["open-ended"]
    assert [s.why for s in await store.active_silences(at(21))] == ["in force"]
    assert await store.suspended_policies() == {"p2": "y"}


# -- concurrency --------------------------------------------------------------


async def test_two_stores_writing_to_one_database_at_once_both_succeed(store_url: str) -> None:
    first, second = await Store.open(store_url), await Store.open(store_url)

    async def issue(opened: Store, prefix: str) -> list[int]:
        ids = []
        for n in range(20):
            action_id = await opened.issue_action(action_row(instance=f"{prefix}{n}"))
            await opened.set_outcome(action_id, "in_flight", at(1))
            ids.append(action_id)
        return ids

    a, b = await asyncio.gather(issue(first, "a"), issue(second, "b"))
    listed = await first.open_actions()
    await first.close()
    await second.close()

    assert len(set(a) | set(b)) == 40
    assert len(listed) == 40
