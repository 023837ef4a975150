"""healer's side of CloudPilot: the typed async client, its configuration, errors and payloads.

``CloudPilotClient`` is the only code that speaks HTTP to CloudPilot; the flow
starts here (client → snapshot → policy → guard → executor). See ``client.py``
for answer forms and retries, ``errors.py`` for the error tree, ``config.py``
for everything that is configuration, and ``models.py`` for the payloads.
"""

from healer.cloudpilot.client import CloudPilotClient, RequestHook
from healer.cloudpilot.config import ClientConfig, Paths
from healer.cloudpilot.errors import (
    ActionNotSent,
    ActionOutcomeUnknown,
    ActionRefused,
    CallConnectionError,
    CallTimeout,
    ClientStatusError,
    CloudPilotError,
    EnvelopeError,
    MalformedResponse,
    PermanentError,
    ServerError,
    TemporaryError,
)

__all__ = [
    "ActionNotSent",
    "ActionOutcomeUnknown",
    "ActionRefused",
    "CallConnectionError",
    "CallTimeout",
    "ClientConfig",
    "ClientStatusError",
    "CloudPilotClient",
    "CloudPilotError",
    "EnvelopeError",
    "MalformedResponse",
    "Paths",
    "PermanentError",
    "RequestHook",
    "ServerError",
    "TemporaryError",
]
