"""The action ledger and the memory of healer, on SQLite or PostgreSQL.

See ``store.py`` for how the engine uses it and ``migrations.py`` for how the
schema is versioned.
"""

from healer.store.errors import (
    InvalidTransition,
    StoreConfigError,
    StoreError,
    StoreVersionError,
    UnknownAction,
)
from healer.store.migrations import LATEST_VERSION
from healer.store.records import (
    FINAL_OUTCOMES,
    OPEN_OUTCOMES,
    ActionRecord,
    ActionRow,
    DecisionRecord,
    DecisionRow,
    Outcome,
    PauseRecord,
    SilenceRecord,
)
from healer.store.store import DEFAULT_DECISION_DEDUP, Store, normalize_url

__all__ = [
    "DEFAULT_DECISION_DEDUP",
    "FINAL_OUTCOMES",
    "LATEST_VERSION",
    "OPEN_OUTCOMES",
    "ActionRecord",
    "ActionRow",
    "DecisionRecord",
    "DecisionRow",
    "InvalidTransition",
    "Outcome",
    "PauseRecord",
    "SilenceRecord",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreVersionError",
    "UnknownAction",
    "normalize_url",
]
