"""Schema versions: ordered steps applied when a store is opened.

Each step brings the schema from version N-1 to N and records itself in the
``schema_version`` table, in the same transaction: a step is applied
completely or not at all (both backends have transactional DDL). Opening a
store applies the steps it has not seen yet; a store whose version is newer
than the last step here refuses to open, because this healer would misread it.

Several replicas may open one PostgreSQL store at once: the migration holds a
transaction-level advisory lock, so exactly one of them migrates and the
others see the result. On SQLite the write transaction (``BEGIN IMMEDIATE``)
does the same.

How to change the schema: add a step at the end, never edit a shipped one.
A step declares its DDL itself (its own ``MetaData``), so that later changes
to ``schema.py`` never change what an old step creates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import (
    Column,
    Connection,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from healer.store.errors import StoreVersionError
from healer.store.schema import IdType, JSONType, UTCDateTime, schema_version

log = structlog.get_logger(__name__)

#: pg_advisory_xact_lock key held while migrating ("healer" in ASCII).
ADVISORY_LOCK_KEY = 0x6865616C6572


@dataclass(frozen=True)
class Step:
    """One schema change: from ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """The schema as first shipped: ledger, memory, pauses, silences, suspensions, state."""
    md = MetaData()
    Table(
        "decisions",
        md,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        Column("app_id", String(255), nullable=False),
        Column("instance_id", String(255)),
        Column("policy", String(255), nullable=False),
        Column("action", String(32), nullable=False),
        Column("decision", String(32), nullable=False),
        Column("reason", String(64)),
        Column("arithmetic", JSONType, nullable=False),
        Column("matched", JSONType, nullable=False),
        # Listing by time, per app by time, and pruning by time.
        Index("ix_decisions_at", "at"),
        Index("ix_decisions_app_id_at", "app_id", "at"),
    )
    Table(
        "actions",
        md,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app_id", String(255), nullable=False),
        Column("instance_id", String(255), nullable=False),
        Column("policy", String(255), nullable=False),
        Column("action", String(32), nullable=False),
        Column("params", JSONType, nullable=False),
        Column("issued_at", UTCDateTime, nullable=False),
        Column("deadline", UTCDateTime, nullable=False),
        Column("fault_seen_at", UTCDateTime),
        Column("replica", String(255)),
        Column("arithmetic", JSONType, nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("outcome_at", UTCDateTime),
        Column("detail", Text),
        # attempts_since and the ledger by time; per app, per policy; open actions.
        Index("ix_actions_issued_at", "issued_at"),
        Index("ix_actions_app_id_issued_at", "app_id", "issued_at"),
        Index("ix_actions_policy_issued_at", "policy", "issued_at"),
        Index("ix_actions_outcome", "outcome"),
    )
    Table(
        "condition_memory",
        md,
        Column("app_id", String(255), primary_key=True),
        Column("data", JSONType, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    Table(
        "pauses",
        md,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("app_id", String(255)),
        Column("who", String(255), nullable=False),
        Column("why", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("expires_at", UTCDateTime),
        Column("removed_at", UTCDateTime),
        Column("removed_by", String(255)),
        Index("ix_pauses_removed_at", "removed_at"),
    )
    Table(
        "silences",
        md,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("selector", JSONType, nullable=False),
        Column("starts_at", UTCDateTime, nullable=False),
        Column("ends_at", UTCDateTime, nullable=False),
        Column("tz", String(64), nullable=False),
        Column("who", String(255), nullable=False),
        Column("why", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("removed_at", UTCDateTime),
        Column("removed_by", String(255)),
        Index("ix_silences_ends_at", "ends_at"),
    )
    Table(
        "policy_suspensions",
        md,
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("policy", String(255), nullable=False),
        Column("why", Text, nullable=False),
        Column("suspended_at", UTCDateTime, nullable=False),
        Column("resumed_at", UTCDateTime),
        Column("resumed_by", String(255)),
        Index("ix_policy_suspensions_policy", "policy"),
    )
    Table(
        "state",
        md,
        Column("name", String(255), primary_key=True),
        Column("value", JSONType, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    )
    md.create_all(conn, checkfirst=False)


#: Every schema version, in order. Append only.
STEPS: tuple[Step, ...] = (Step(1, "initial schema", _v1_initial),)

#: The newest schema this healer knows.
LATEST_VERSION = STEPS[-1].version


def _check_order(steps: Sequence[Step]) -> None:
    versions = [s.version for s in steps]
    if versions != list(range(1, len(steps) + 1)):
        msg = f"migration steps must be numbered 1, 2, 3, ... in order, got {versions}"
        raise ValueError(msg)


def _bootstrap_version_table(conn: Connection) -> None:
    # The version table is the one table outside the steps: it says which steps ran.
    schema_version.create(conn, checkfirst=True)


async def migrate(engine: AsyncEngine, steps: Sequence[Step] = STEPS) -> tuple[int, int]:
    """Bring the store's schema up to the last of ``steps``; return (from, to) versions.

    Raises ``StoreVersionError`` when the store is newer than ``steps`` know.
    """
    _check_order(steps)
    latest = steps[-1].version if steps else 0

    async with engine.connect() as conn:
        # A write transaction from the start on SQLite: see store._on_begin.
        await conn.execution_options(healer_write=True)
        async with conn.begin():
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            await conn.run_sync(_bootstrap_version_table)
            current = (
                await conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0)))
            ).scalar_one()

            if current > latest:
                msg = (
                    f"the store has schema version {current}, but this healer knows versions "
                    f"up to {latest} only: upgrade healer, or point it at another store"
                )
                raise StoreVersionError(msg)

            for step in steps[current:]:
                await conn.run_sync(step.apply)
                await conn.execute(
                    insert(schema_version).values(
                        version=step.version,
                        description=step.description,
                        applied_at=datetime.now(UTC),
                    )
                )
                log.info("store_migrated", version=step.version, description=step.description)

    return current, latest
