"""The ledger and the memory of healer: what it decided, what it did, what it must remember.

The engine sits upstream: it records every guard decision, writes each
approved action as ``issued`` *before* it calls CloudPilot, then records the
per-instance outcome and, in later cycles, the verdict. Because the write
commits before the call, a daemon killed between the two finds the action
again on restart (``open_actions``) and counts it as in flight until its
deadline: nothing is ever sent twice because the daemon restarted.

Besides the ledger the store keeps the state that must survive a restart:
the condition memory behind ``for``, pauses, silences, suspended policies and
small sweep-level values (the fleet brake, the token bucket).

One schema serves SQLite (the embedded default: one file, WAL, a busy
timeout, write transactions that take the write lock up front) and
PostgreSQL (several replicas). Everything is async, on SQLAlchemy Core.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from pydantic import ValidationError
from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    event,
    func,
    insert,
    make_url,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from healer.policy.model import Select
from healer.store import schema
from healer.store.errors import InvalidTransition, StoreConfigError, UnknownAction
from healer.store.migrations import migrate
from healer.store.records import (
    FINAL_OUTCOMES,
    OPEN_OUTCOMES,
    TRANSITIONS,
    ActionRecord,
    ActionRow,
    DecisionRecord,
    DecisionRow,
    Outcome,
    PauseRecord,
    SilenceRecord,
)

log = structlog.get_logger(__name__)

#: How long an SQLite writer waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT = timedelta(seconds=10)

#: Default window in which an identical refusal is written once only.
DEFAULT_DECISION_DEDUP = timedelta(minutes=5)

#: Dedup keys kept in memory before the old ones are dropped.
_DEDUP_MAX_KEYS = 100_000

_DedupKey = tuple[str, str | None, str, str, str, str | None]


def normalize_url(url: str | URL) -> URL:
    """The async-driver form of a store URL.

    ``sqlite:///path.db`` and ``sqlite+aiosqlite:///path.db`` become aiosqlite;
    ``postgresql://``, ``postgres://`` and ``postgresql+psycopg://`` become
    psycopg 3 (which SQLAlchemy runs in its async mode). Anything else is a
    configuration error.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        msg = f"store URL is not a database URL: {exc}"
        raise StoreConfigError(msg) from exc

    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in {"", "aiosqlite", "pysqlite"}:
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in {"postgresql", "postgres"} and driver in {"", "psycopg", "psycopg_async"}:
        return parsed.set(drivername="postgresql+psycopg")

    msg = (
        f"store URL scheme {parsed.drivername!r} is not supported: use sqlite:///PATH "
        "or postgresql+psycopg://USER@HOST/DB"
    )
    raise StoreConfigError(msg)


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a file-backed SQLite store URL, or None (PostgreSQL, in-memory SQLite).

    Raises StoreConfigError for a URL that is not a store's.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_on_begin), not the driver.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    busy_ms = int(SQLITE_BUSY_TIMEOUT.total_seconds() * 1000)
    # FULL: an `issued` row survives power loss too.
    for pragma in (f"busy_timeout={busy_ms}", "synchronous=FULL"):
        cursor.execute(f"PRAGMA {pragma}")
    _sqlite_use_wal(cursor)
    cursor.close()


def _sqlite_use_wal(cursor: Any) -> None:
    """Switch the database file to WAL (readers never block the writer), waiting out others.

    The mode is kept in the file, so this is a no-op after the first connection.
    Switching needs the file to itself, and SQLite answers "database is locked" at
    once rather than through the busy timeout when another connection holds it
    (several replicas opening a new store together): retry until the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT.total_seconds()
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    # A write transaction takes the write lock up front: a deferred one that
    # upgrades later fails at once with "database is locked" instead of waiting.
    write = conn.get_execution_options().get("healer_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        memory = url.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {}
        if memory:
            # One connection holds the whole in-memory database.
            kwargs["poolclass"] = StaticPool
        else:
            # Never made here: a mistyped path would quietly start an empty ledger, and the
            # ledger is what keeps a restarted healer from sending an action twice.
            folder = Path(str(url.database)).parent
            if not folder.is_dir():
                raise StoreConfigError(f"the folder {folder} of the SQLite file does not exist")
        engine = create_async_engine(
            url,
            json_serializer=schema.dumps,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT.total_seconds()},
            **kwargs,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine

    return create_async_engine(url, json_serializer=schema.dumps, pool_pre_ping=True)


def _now() -> datetime:
    return datetime.now(UTC)


def _require_aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        msg = f"{name} must be timezone-aware, got naive {value.isoformat()}"
        raise ValueError(msg)


def _action_record(row: Any) -> ActionRecord:
    m = row._mapping
    return ActionRecord(
        id=m["id"],
        app_id=m["app_id"],
        instance_id=m["instance_id"],
        policy=m["policy"],
        action=m["action"],
        params=m["params"],
        issued_at=m["issued_at"],
        deadline=m["deadline"],
        fault_seen_at=m["fault_seen_at"],
        replica=m["replica"],
        arithmetic=m["arithmetic"],
        outcome=Outcome(m["outcome"]),
        outcome_at=m["outcome_at"],
        detail=m["detail"],
    )


def _decision_record(row: Any) -> DecisionRecord:
    m = row._mapping
    return DecisionRecord(
        id=m["id"],
        at=m["at"],
        app_id=m["app_id"],
        instance_id=m["instance_id"],
        policy=m["policy"],
        action=m["action"],
        decision=m["decision"],
        reason=m["reason"],
        arithmetic=m["arithmetic"],
        matched=m["matched"],
    )


def _pause_record(row: Any) -> PauseRecord:
    m = row._mapping
    return PauseRecord(
        id=m["id"],
        app_id=m["app_id"],
        who=m["who"],
        why=m["why"],
        created_at=m["created_at"],
        until=m["expires_at"],
        removed_at=m["removed_at"],
        removed_by=m["removed_by"],
    )


def _silence_record(row: Any) -> SilenceRecord:
    m = row._mapping
    return SilenceRecord(
        id=m["id"],
        selector=m["selector"],
        start=m["starts_at"],
        end=m["ends_at"],
        tz=m["tz"],
        who=m["who"],
        why=m["why"],
        created_at=m["created_at"],
        removed_at=m["removed_at"],
        removed_by=m["removed_by"],
    )


def _outcomes(outcome: Outcome | str | Iterable[Outcome | str]) -> list[str]:
    if isinstance(outcome, str):
        return [Outcome(outcome).value]
    return [Outcome(o).value for o in outcome]


class Store:
    """The ledger, condition memory, pauses, silences, suspensions and state of healer.

    Open it with ``await Store.open(url)``; every method is a coroutine and
    every write commits before it returns. Lists come back newest first,
    except ``open_actions`` and ``attempts_since``, which come in the order
    things happened.

    Identical refusals are deduplicated: a decision other than ``approved``
    with the same app, instance, policy, action, decision and reason as one
    written less than ``decision_dedup`` earlier (by its ``at``) is not
    written again. Pass ``decision_dedup=timedelta(0)`` to write every one.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schema_version: int,
        decision_dedup: timedelta = DEFAULT_DECISION_DEDUP,
    ) -> None:
        self._engine = engine
        self._schema_version = schema_version
        self._decision_dedup = decision_dedup
        self._last_written: dict[_DedupKey, datetime] = {}
        memory = engine.url.get_backend_name() == "sqlite" and engine.url.database in (
            None,
            "",
            ":memory:",
        )
        # An in-memory SQLite store has one shared connection: take turns on it.
        self._serial: asyncio.Lock | None = asyncio.Lock() if memory else None

    @classmethod
    async def open(
        cls, url: str | URL, *, decision_dedup: timedelta = DEFAULT_DECISION_DEDUP
    ) -> Store:
        """Connect, create or migrate the schema, and return the store.

        Raises ``StoreConfigError`` for an unusable URL and ``StoreVersionError``
        when the store was written by a newer healer.
        """
        async_url = normalize_url(url)
        engine = _create_engine(async_url)
        try:
            old, new = await migrate(engine)
        except BaseException:
            # Nothing else will close the pool of a store that never opened.
            await engine.dispose()
            raise

        log.info(
            "store_opened",
            backend=async_url.get_backend_name(),
            database=async_url.database,
            schema_version=new,
            migrated_from=old,
        )
        return cls(engine, schema_version=new, decision_dedup=decision_dedup)

    async def close(self) -> None:
        await self._engine.dispose()

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.url.get_backend_name()

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @contextlib.asynccontextmanager
    async def _tx(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed on leaving, rolled back on an error."""
        async with self._serial or contextlib.nullcontext(), self._engine.connect() as conn:
            if write:
                await conn.execution_options(healer_write=True)
            async with conn.begin():
                yield conn

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which knows ON CONFLICT."""
        if self.backend == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- decisions ---------------------------------------------------------

    async def record_decisions(self, rows: Iterable[DecisionRow]) -> int:
        """Write guard decisions in one transaction; return how many were written.

        Refusals and dry runs repeated within the dedup window are skipped.
        """
        kept: list[DecisionRow] = []
        written: dict[_DedupKey, datetime] = {}
        for row in rows:
            _require_aware(row.at, "DecisionRow.at")
            if self._decision_dedup <= timedelta(0) or row.decision == "approved":
                kept.append(row)
                continue

            key = (row.app_id, row.instance_id, row.policy, row.action, row.decision, row.reason)
            last = written.get(key) or self._last_written.get(key)
            if last is not None and timedelta(0) <= row.at - last < self._decision_dedup:
                continue
            kept.append(row)
            written[key] = row.at

        if kept:
            values = [
                {
                    "at": r.at,
                    "app_id": r.app_id,
                    "instance_id": r.instance_id,
                    "policy": r.policy,
                    "action": str(r.action),
                    "decision": str(r.decision),
                    "reason": None if r.reason is None else str(r.reason),
                    "arithmetic": r.arithmetic,
                    "matched": r.matched,
                }
                for r in kept
            ]
            async with self._tx(write=True) as conn:
                await conn.execute(insert(schema.decisions), values)

        # Only what was committed suppresses later copies.
        self._last_written.update(written)
        if len(self._last_written) > _DEDUP_MAX_KEYS:
            newest = max(self._last_written.values())
            self._last_written = {
                k: at for k, at in self._last_written.items() if newest - at < self._decision_dedup
            }
        return len(kept)

    async def decisions(
        self,
        app_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        policy: str | None = None,
        decision: str | None = None,
        instance_id: str | None = None,
        limit: int = 500,
    ) -> list[DecisionRecord]:
        """Stored decisions, newest first; ``since`` inclusive, ``until`` exclusive."""
        t = schema.decisions
        where: list[ColumnElement[bool]] = []
        if app_id is not None:
            where.append(t.c.app_id == app_id)
        if since is not None:
            where.append(t.c.at >= since)
        if until is not None:
            where.append(t.c.at < until)
        if policy is not None:
            where.append(t.c.policy == policy)
        if decision is not None:
            where.append(t.c.decision == decision)
        if instance_id is not None:
            where.append(t.c.instance_id == instance_id)

        query = select(t).where(and_(true(), *where)).order_by(t.c.at.desc(), t.c.id.desc())
        async with self._tx(write=False) as conn:
            result = await conn.execute(query.limit(limit))
            return [_decision_record(r) for r in result]

    # -- actions -----------------------------------------------------------

    async def issue_action(self, row: ActionRow) -> int:
        """Write one action as ``issued`` and commit; return its id."""
        (action_id,) = await self.issue_actions([row])
        return action_id

    async def issue_actions(self, rows: Sequence[ActionRow]) -> list[int]:
        """Write several actions as ``issued`` in one transaction; return their ids in order."""
        if not rows:
            return []

        values = []
        for r in rows:
            for name in ("issued_at", "deadline", "fault_seen_at"):
                _require_aware(getattr(r, name), f"ActionRow.{name}")
            values.append(
                {
                    "app_id": r.app_id,
                    "instance_id": r.instance_id,
                    "policy": r.policy,
                    "action": str(r.action),
                    "params": r.params,
                    "issued_at": r.issued_at,
                    "deadline": r.deadline,
                    "fault_seen_at": r.fault_seen_at,
                    "replica": r.replica,
                    "arithmetic": r.arithmetic,
                    "outcome": Outcome.ISSUED.value,
                    "outcome_at": r.issued_at,
                    "detail": None,
                }
            )

        t = schema.actions
        query = insert(t).returning(t.c.id, sort_by_parameter_order=True)
        async with self._tx(write=True) as conn:
            result = await conn.execute(query, values)
            return [int(r[0]) for r in result]

    async def set_outcome(
        self, action_id: int, outcome: Outcome | str, at: datetime, detail: str | None = None
    ) -> None:
        """Move one action to ``outcome``; see ``set_outcomes``."""
        await self.set_outcomes([(action_id, outcome, at, detail)])

    async def set_outcomes(
        self, changes: Iterable[tuple[int, Outcome | str, datetime, str | None]]
    ) -> None:
        """Move several actions to new outcomes in one transaction.

        Setting the outcome an action already has changes nothing (a retried
        write is harmless). Raises ``UnknownAction`` for an id not in the
        store and ``InvalidTransition`` for a change the lifecycle forbids,
        such as overwriting a final outcome; either rolls back every change.
        """
        t = schema.actions
        async with self._tx(write=True) as conn:
            for action_id, outcome, at, detail in changes:
                new = Outcome(outcome)
                _require_aware(at, "at")
                current_text = (
                    await conn.execute(
                        select(t.c.outcome).where(t.c.id == action_id).with_for_update()
                    )
                ).scalar_one_or_none()
                if current_text is None:
                    msg = f"no action with id {action_id}"
                    raise UnknownAction(msg)

                current = Outcome(current_text)
                if new == current:
                    continue
                if new not in TRANSITIONS.get(current, frozenset()):
                    msg = f"action {action_id} is {current.value}; it cannot become {new.value}"
                    raise InvalidTransition(msg)

                await conn.execute(
                    update(t)
                    .where(t.c.id == action_id)
                    .values(outcome=new.value, outcome_at=at, detail=detail)
                )

    async def open_actions(self) -> list[ActionRecord]:
        """Actions without a final outcome (issued, in_flight, unknown), oldest first.

        After a restart these are what the previous run left acting; each
        counts as in flight until its deadline (``ActionRecord.in_flight_at``).
        """
        t = schema.actions
        query = (
            select(t)
            .where(t.c.outcome.in_([o.value for o in OPEN_OUTCOMES]))
            .order_by(t.c.issued_at, t.c.id)
        )
        async with self._tx(write=False) as conn:
            return [_action_record(r) for r in await conn.execute(query)]

    async def expire_overdue(self, now: datetime) -> list[int]:
        """End open actions whose deadline has passed as ``expired``; return their ids.

        For actions nobody could verify, e.g. those a crashed run left behind.
        """
        _require_aware(now, "now")
        t = schema.actions
        query = (
            update(t)
            .where(t.c.outcome.in_([o.value for o in OPEN_OUTCOMES]), t.c.deadline <= now)
            .values(
                outcome=Outcome.EXPIRED.value,
                outcome_at=now,
                detail="deadline passed with no outcome",
            )
            .returning(t.c.id)
        )
        async with self._tx(write=True) as conn:
            ids = sorted(int(r[0]) for r in await conn.execute(query))
        if ids:
            log.info("store_actions_expired", count=len(ids))
        return ids

    async def actions(
        self,
        app_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        outcome: Outcome | str | Iterable[Outcome | str] | None = None,
        policy: str | None = None,
        limit: int = 500,
        *,
        instance_id: str | None = None,
    ) -> list[ActionRecord]:
        """The ledger of actions, newest first; ``since`` inclusive, ``until`` exclusive.

        ``outcome`` is one outcome or several.
        """
        t = schema.actions
        where: list[ColumnElement[bool]] = []
        if app_id is not None:
            where.append(t.c.app_id == app_id)
        if since is not None:
            where.append(t.c.issued_at >= since)
        if until is not None:
            where.append(t.c.issued_at < until)
        if outcome is not None:
            where.append(t.c.outcome.in_(_outcomes(outcome)))
        if policy is not None:
            where.append(t.c.policy == policy)
        if instance_id is not None:
            where.append(t.c.instance_id == instance_id)

        query = select(t).where(and_(true(), *where)).order_by(t.c.issued_at.desc(), t.c.id.desc())
        async with self._tx(write=False) as conn:
            return [_action_record(r) for r in await conn.execute(query.limit(limit))]

    async def attempts_since(self, since: datetime) -> list[ActionRecord]:
        """Every action issued at or after ``since``, whatever its outcome, oldest first.

        The guard's rate limits, cooldowns, escalation and suspension count these.
        """
        t = schema.actions
        query = select(t).where(t.c.issued_at >= since).order_by(t.c.issued_at, t.c.id)
        async with self._tx(write=False) as conn:
            return [_action_record(r) for r in await conn.execute(query)]

    # -- condition memory --------------------------------------------------

    async def save_memory(self, app_id: str, data: Mapping[str, Any]) -> None:
        """Replace one app's condition memory."""
        await self.save_memories({app_id: data})

    async def save_memories(self, memories: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the condition memory of several apps in one transaction."""
        if not memories:
            return

        now = _now()
        values = [
            {"app_id": app_id, "data": dict(data), "updated_at": now}
            for app_id, data in memories.items()
        ]
        stmt = self._insert(schema.condition_memory)
        stmt = stmt.on_conflict_do_update(
            index_elements=["app_id"],
            set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at},
        )
        async with self._tx(write=True) as conn:
            await conn.execute(stmt, values)

    async def load_memory(self) -> dict[str, dict[str, Any]]:
        """Every app's condition memory, by app id."""
        t = schema.condition_memory
        async with self._tx(write=False) as conn:
            return {r.app_id: r.data for r in await conn.execute(select(t.c.app_id, t.c.data))}

    async def forget_memory(self, app_id: str) -> None:
        """Drop one app's condition memory (the app left the fleet)."""
        t = schema.condition_memory
        async with self._tx(write=True) as conn:
            await conn.execute(delete(t).where(t.c.app_id == app_id))

    # -- pauses ------------------------------------------------------------

    async def add_pause(
        self,
        app_id: str | None,
        who: str,
        why: str,
        until: datetime | None,
        *,
        at: datetime | None = None,
    ) -> int:
        """Pause every action (``app_id`` None) or one app's until ``until``; return its id.

        ``until`` None pauses until someone resumes.
        """
        _require_aware(until, "until")
        _require_aware(at, "at")
        t = schema.pauses
        values = {
            "app_id": app_id,
            "who": who,
            "why": why,
            "created_at": at or _now(),
            "expires_at": until,
        }
        async with self._tx(write=True) as conn:
            result = await conn.execute(insert(t).values(values).returning(t.c.id))
            pause_id = int(result.scalar_one())
        shown = until.isoformat() if until is not None else None
        log.info("pause_added", app_id=app_id, who=who, why=why, until=shown, pause_id=pause_id)
        return pause_id

    async def remove_pause(
        self, app_id: str | None, who: str, *, at: datetime | None = None
    ) -> int:
        """End every pause of that scope (global when ``app_id`` is None); return how many.

        Ended pauses stay in the table, marked with who ended them and when.
        """
        _require_aware(at, "at")
        t = schema.pauses
        scope = t.c.app_id.is_(None) if app_id is None else t.c.app_id == app_id
        query = (
            update(t)
            .where(scope, t.c.removed_at.is_(None))
            .values(removed_at=at or _now(), removed_by=who)
        )
        async with self._tx(write=True) as conn:
            count = (await conn.execute(query)).rowcount
        log.info("pause_removed", app_id=app_id, who=who, count=count)
        return int(count)

    async def active_pauses(self, now: datetime) -> list[PauseRecord]:
        """Pauses neither ended nor expired at ``now``, oldest first."""
        _require_aware(now, "now")
        t = schema.pauses
        query = (
            select(t)
            .where(
                t.c.removed_at.is_(None),
                or_(t.c.expires_at.is_(None), t.c.expires_at > now),
            )
            .order_by(t.c.created_at, t.c.id)
        )
        async with self._tx(write=False) as conn:
            return [_pause_record(r) for r in await conn.execute(query)]

    # -- silences ----------------------------------------------------------

    async def add_silence(
        self,
        selector: Mapping[str, Any],
        start: datetime,
        end: datetime,
        tz: str,
        who: str,
        why: str,
        *,
        at: datetime | None = None,
    ) -> int:
        """Silence apps matching ``selector`` from ``start`` to ``end``; return its id.

        ``selector`` is a policy's ``select`` (``healer.policy.model.Select``),
        refused with ValueError when it is not one, and stored as given; the
        engine matches it with the policies' code. ``tz`` is the IANA zone the
        window was written in, kept for display.
        """
        for value, name in ((start, "start"), (end, "end"), (at, "at")):
            _require_aware(value, name)
        try:
            Select.model_validate(selector)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = f"selector{'.' + where if where else ''}: {first['msg']}"
            raise ValueError(msg) from None
        if end <= start:
            msg = f"a silence must end after it starts: {start.isoformat()} to {end.isoformat()}"
            raise ValueError(msg)
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            # A typo in a zone name must not become a silence in the wrong hours.
            msg = f"unknown time zone {tz!r}"
            raise ValueError(msg) from exc

        t = schema.silences
        values = {
            "selector": dict(selector),
            "starts_at": start,
            "ends_at": end,
            "tz": tz,
            "who": who,
            "why": why,
            "created_at": at or _now(),
        }
        async with self._tx(write=True) as conn:
            silence_id = int(
                (await conn.execute(insert(t).values(values).returning(t.c.id))).scalar_one()
            )
        log.info(
            "silence_added",
            silence_id=silence_id,
            select=dict(selector),
            who=who,
            why=why,
            start=start.isoformat(),
            end=end.isoformat(),
            tz=tz,
        )
        return silence_id

    async def remove_silence(
        self, silence_id: int, who: str, *, at: datetime | None = None
    ) -> bool:
        """End a silence early; False when it was not there or already ended."""
        _require_aware(at, "at")
        t = schema.silences
        query = (
            update(t)
            .where(t.c.id == silence_id, t.c.removed_at.is_(None))
            .values(removed_at=at or _now(), removed_by=who)
        )
        async with self._tx(write=True) as conn:
            removed = (await conn.execute(query)).rowcount > 0
        log.info("silence_removed", silence_id=silence_id, who=who, removed=removed)
        return removed

    async def active_silences(self, now: datetime) -> list[SilenceRecord]:
        """Silences in force at ``now`` (start inclusive, end exclusive), oldest first."""
        _require_aware(now, "now")
        t = schema.silences
        query = (
            select(t)
            .where(t.c.removed_at.is_(None), t.c.starts_at <= now, t.c.ends_at > now)
            .order_by(t.c.starts_at, t.c.id)
        )
        async with self._tx(write=False) as conn:
            return [_silence_record(r) for r in await conn.execute(query)]

    # -- suspended policies ------------------------------------------------

    async def suspend_policy(self, name: str, why: str, at: datetime) -> bool:
        """Suspend a policy until a person resumes it; False when it was suspended already."""
        _require_aware(at, "at")
        t = schema.policy_suspensions
        async with self._tx(write=True) as conn:
            already = (
                await conn.execute(
                    select(t.c.id).where(t.c.policy == name, t.c.resumed_at.is_(None)).limit(1)
                )
            ).first()
            if already is not None:
                return False
            await conn.execute(insert(t).values(policy=name, why=why, suspended_at=at))
        log.warning("policy_suspended", policy=name, why=why)
        return True

    async def resume_policy(self, name: str, who: str, *, at: datetime | None = None) -> bool:
        """Resume a suspended policy; False when it was not suspended."""
        _require_aware(at, "at")
        t = schema.policy_suspensions
        query = (
            update(t)
            .where(t.c.policy == name, t.c.resumed_at.is_(None))
            .values(resumed_at=at or _now(), resumed_by=who)
        )
        async with self._tx(write=True) as conn:
            resumed = (await conn.execute(query)).rowcount > 0
        log.info("policy_resumed", policy=name, who=who, resumed=resumed)
        return resumed

    async def suspended_policies(self) -> dict[str, str]:
        """Suspended policy names, each with why it was suspended."""
        t = schema.policy_suspensions
        query = select(t.c.policy, t.c.why).where(t.c.resumed_at.is_(None)).order_by(t.c.id)
        async with self._tx(write=False) as conn:
            return {r.policy: r.why for r in await conn.execute(query)}

    async def policy_resumptions(self) -> dict[str, datetime]:
        """When a person last resumed each policy: outcomes before it no longer count."""
        t = schema.policy_suspensions
        query = (
            select(t.c.policy, func.max(t.c.resumed_at).label("resumed_at"))
            .where(t.c.resumed_at.is_not(None))
            .group_by(t.c.policy)
        )
        # max() keeps its argument's type, so the times come back in UTC as everywhere.
        async with self._tx(write=False) as conn:
            return {r.policy: r.resumed_at for r in await conn.execute(query)}

    # -- sweep-level state -------------------------------------------------

    async def get_state(self, key: str) -> dict[str, Any] | None:
        t = schema.state
        async with self._tx(write=False) as conn:
            value = (
                await conn.execute(select(t.c.value).where(t.c.name == key))
            ).scalar_one_or_none()
        return None if value is None else dict(value)

    async def set_state(self, key: str, value: Mapping[str, Any]) -> None:
        stmt = self._insert(schema.state).values(name=key, value=dict(value), updated_at=_now())
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
        async with self._tx(write=True) as conn:
            await conn.execute(stmt)

    # -- retention ---------------------------------------------------------

    async def prune(self, before: datetime) -> int:
        """Delete what is over and older than ``before``; return how many rows went.

        Goes: decisions made before it; actions with a final outcome issued
        before it; pauses and silences that ended or expired before it;
        suspensions resumed before it. Open actions and anything still in
        force stay, however old.
        """
        _require_aware(before, "before")
        a, p, s, ps = schema.actions, schema.pauses, schema.silences, schema.policy_suspensions
        statements = {
            "decisions": delete(schema.decisions).where(schema.decisions.c.at < before),
            "actions": delete(a).where(
                a.c.issued_at < before, a.c.outcome.in_([o.value for o in FINAL_OUTCOMES])
            ),
            "pauses": delete(p).where(or_(p.c.removed_at < before, p.c.expires_at < before)),
            "silences": delete(s).where(or_(s.c.removed_at < before, s.c.ends_at < before)),
            "suspensions": delete(ps).where(ps.c.resumed_at < before),
        }
        counts: dict[str, int] = {}
        async with self._tx(write=True) as conn:
            for name, statement in statements.items():
                counts[name] = int((await conn.execute(statement)).rowcount)
        log.info("store_pruned", before=before, **counts)
        return sum(counts.values())
