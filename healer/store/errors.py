"""Errors of the store, grouped by what the caller does next.

```
StoreError
├── StoreConfigError        the URL is wrong: fix the configuration
├── StoreVersionError       the store is newer than this healer: upgrade healer
├── UnknownAction           no action with that id: a bug in the caller
└── InvalidTransition       that outcome may not follow the current one: a bug, or a race
```

Database errors (connection lost, lock timeout) are SQLAlchemy's own
``sqlalchemy.exc.OperationalError`` and friends, passed through unchanged:
they may succeed later.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises itself."""


class StoreConfigError(StoreError, ValueError):
    """The store URL names a database or driver healer cannot use."""


class StoreVersionError(StoreError):
    """The store's schema is newer than this version of healer knows."""


class UnknownAction(StoreError, LookupError):
    """No action has the given id."""


class InvalidTransition(StoreError):
    """The outcome may not follow the action's current outcome."""
