"""Errors of CloudPilot calls, grouped by what the caller does next.

A call that may succeed later (a timeout, a dropped connection, a 5xx) is a
``TemporaryError``: the client retries queries itself, and a caller that still
gets one skips the app for this cycle. A call that never will as asked (a 4xx,
a body that is not the documented payload, an envelope with a non-zero
``code``) is a ``PermanentError``: retrying is pointless, a person should look.

Actions add one question: did it happen? An action is never retried, so its
errors say, for the instances it named, which of three things is true:

- ``ActionNotSent``: the request never left (no connection could be made, or
  the service asked us to slow down before reading it). Nothing happened.
- ``ActionRefused``: CloudPilot answered clearly that it did not do it (a 4xx
  or an envelope error). Nothing happened.
- ``ActionOutcomeUnknown``: the request may have been acted on but the answer
  was lost or unreadable (a timeout or a dropped connection after sending, a
  5xx, a 200 whose body is not the documented answer). The instances must be
  treated as possibly acted on until verification says otherwise.

The tree::

    CloudPilotError                 .call, .app_id, .outcome
    ├── TemporaryError              try again later
    │   ├── CallTimeout             no answer in time
    │   ├── CallConnectionError     no connection, or it dropped
    │   ├── ServerError             5xx (or 429), .status
    │   ├── ActionNotSent           .instance_ids: the action did not happen
    │   └── ActionOutcomeUnknown    .instance_ids: the action may have happened
    └── PermanentError              do not retry as is
        ├── ClientStatusError       4xx, .status
        ├── MalformedResponse       not JSON, not an object, a documented key
        │                           missing, a value of the wrong type
        ├── EnvelopeError           ``code`` not 0, .code, .api_message
        └── ActionRefused           .instance_ids: the action did not happen

Every message names the call and the app; none carries a header or a token.
The lower-level error (httpx, json, pydantic) is chained as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class CloudPilotError(Exception):
    """A CloudPilot call failed. ``outcome`` is the metrics label of the failure."""

    outcome: str = "error"
    #: False when the request surely never reached CloudPilot; None when it may have.
    request_sent: bool | None = None

    def __init__(self, message: str, *, call: str, app_id: str | None) -> None:
        super().__init__(f"cloudpilot {call} for app {app_id}: {message}")
        self.call = call
        self.app_id = app_id
        self.detail = message


class TemporaryError(CloudPilotError):
    """The call may succeed if tried again later."""

    outcome = "temporary"


class PermanentError(CloudPilotError):
    """The call will not succeed as it is; retrying is pointless."""

    outcome = "permanent"


class CallTimeout(TemporaryError):
    """No answer (or no connection) within the configured time."""

    outcome = "timeout"


class CallConnectionError(TemporaryError):
    """The connection could not be made (``connect_error``) or was lost (``connection_lost``)."""

    def __init__(self, message: str, *, call: str, app_id: str | None, outcome: str) -> None:
        super().__init__(message, call=call, app_id=app_id)
        self.outcome = outcome


class ServerError(TemporaryError):
    """CloudPilot answered 5xx, or 429 (too many requests)."""

    def __init__(self, message: str, *, call: str, app_id: str | None, status: int) -> None:
        super().__init__(message, call=call, app_id=app_id)
        self.status = status
        self.outcome = "http_429" if status == 429 else "http_5xx"


class ClientStatusError(PermanentError):
    """CloudPilot answered 4xx (or an unfollowed 3xx): the request itself is wrong."""

    def __init__(self, message: str, *, call: str, app_id: str | None, status: int) -> None:
        super().__init__(message, call=call, app_id=app_id)
        self.status = status
        self.outcome = f"http_{status // 100}xx"


class MalformedResponse(PermanentError):
    """The body is not the documented payload."""

    outcome = "malformed"


class EnvelopeError(PermanentError):
    """The ``{code, message, data}`` envelope carries a non-zero ``code``.

    ``payload`` is what came with it (``data`` when an object, else the body),
    so that an action's caller can see whether it named instances anyway.
    """

    outcome = "envelope_error"

    def __init__(
        self,
        message: str,
        *,
        call: str,
        app_id: str | None,
        code: object,
        api_message: object,
        payload: Mapping[str, Any],
    ) -> None:
        super().__init__(message, call=call, app_id=app_id)
        self.code = code
        self.api_message = api_message
        self.payload = payload


def _with_ids(
    cls_name: str, instance_ids: Sequence[str], cause: CloudPilotError
) -> tuple[str, list[str]]:
    ids = list(instance_ids)
    return f"{cls_name} for {len(ids)} instance(s): {cause.detail}", ids


class ActionNotSent(TemporaryError):
    """The action never reached CloudPilot: nothing happened to ``instance_ids``."""

    def __init__(self, instance_ids: Sequence[str], cause: CloudPilotError) -> None:
        message, ids = _with_ids("not sent", instance_ids, cause)
        super().__init__(message, call=cause.call, app_id=cause.app_id)
        self.instance_ids = ids
        self.outcome = cause.outcome


class ActionOutcomeUnknown(TemporaryError):
    """The action may have been carried out on ``instance_ids``; its answer was lost."""

    def __init__(self, instance_ids: Sequence[str], cause: CloudPilotError) -> None:
        message, ids = _with_ids("outcome unknown", instance_ids, cause)
        super().__init__(message, call=cause.call, app_id=cause.app_id)
        self.instance_ids = ids
        self.outcome = cause.outcome


class ActionRefused(PermanentError):
    """CloudPilot refused the action outright: it failed on every one of ``instance_ids``."""

    def __init__(self, instance_ids: Sequence[str], cause: CloudPilotError) -> None:
        message, ids = _with_ids("refused", instance_ids, cause)
        super().__init__(message, call=cause.call, app_id=cause.app_id)
        self.instance_ids = ids
        self.outcome = cause.outcome
