"""The tables the store queries, and the column types both backends share.

These are the *current* tables as the queries see them. The DDL that creates
and changes them lives in ``migrations.py``, one frozen step per schema
version; a test checks that the two agree on every table and column.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import postgresql


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both backends.

    PostgreSQL keeps it as ``timestamptz``. SQLite has no such type: the value
    is stored as naive UTC text, which sorts in time order, and comes back with
    UTC attached. A naive datetime is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            msg = f"the store keeps timezone-aware times only, got naive {value.isoformat()}"
            raise ValueError(msg)

        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON on SQLite, JSONB on PostgreSQL.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")

#: A 64-bit id that autoincrements on both (an SQLite rowid must be INTEGER).
IdType = BigInteger().with_variant(Integer(), "sqlite")


def _json_default(value: Any) -> Any:
    # Exact numbers stay exact as text: the guard's ratios are Decimal or Fraction.
    if isinstance(value, Decimal | Fraction):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    msg = f"cannot store a {type(value).__name__} as JSON"
    raise TypeError(msg)


def dumps(value: Any) -> str:
    """JSON for the store: exact numbers as text, times as ISO 8601, durations as seconds.

    NaN and infinity are refused, as PostgreSQL would refuse them.
    """
    return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False)


metadata = MetaData()

decisions = Table(
    "decisions",
    metadata,
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
)

actions = Table(
    "actions",
    metadata,
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
)

condition_memory = Table(
    "condition_memory",
    metadata,
    Column("app_id", String(255), primary_key=True),
    Column("data", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

pauses = Table(
    "pauses",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("app_id", String(255)),
    Column("who", String(255), nullable=False),
    Column("why", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("removed_at", UTCDateTime),
    Column("removed_by", String(255)),
)

silences = Table(
    "silences",
    metadata,
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
)

policy_suspensions = Table(
    "policy_suspensions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("policy", String(255), nullable=False),
    Column("why", Text, nullable=False),
    Column("suspended_at", UTCDateTime, nullable=False),
    Column("resumed_at", UTCDateTime),
    Column("resumed_by", String(255)),
)

state = Table(
    "state",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("value", JSONType, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)
