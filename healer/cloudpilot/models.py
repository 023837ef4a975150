"""Payload models for every CloudPilot call.

These are the first typed layer in the flow client → snapshot → policy → guard.
Field names are the API's own, typos included (``bsn_disabled``, ``DESTORY``).
Every model keeps fields it does not know (``extra="allow"``), and lenient
types where the API document is vague, so that a new field or an odd value
never drops data on the floor. Budget values stay as the exact JSON text
(``Decimal``); the arithmetic on them belongs to the guard.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Payload(BaseModel):
    """Base for CloudPilot payloads: unknown fields are kept, never dropped."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Action(StrEnum):
    """The ten instance actions CloudPilot offers."""

    RESTART = "restart"
    DISABLE = "disable"
    MIGRATE = "migrate"
    DELETE = "delete"
    ENABLE = "enable"
    REPAIR = "repair"
    STOP = "stop"
    START = "start"
    INTERRUPT = "interrupt"
    UNFREEZE = "unfreeze"


#: Actions that take an instance out of service (DESIGN section 3).
DISRUPTIVE_ACTIONS: frozenset[Action] = frozenset(
    {Action.RESTART, Action.MIGRATE, Action.STOP, Action.DELETE, Action.REPAIR, Action.DISABLE}
)

#: The instance states the API documents. Any other state is kept as itself.
KNOWN_STATES: tuple[str, ...] = (
    "NEW",
    "DEPLOYING",
    "DEPLOY_OK",
    "RESTARTING",
    "RUNNING",
    "STOPPING",
    "STOP",
    "UNKNOWN",
    "DESTORY",
    "INVALID_STATE",
)


def normalize_state(state: str) -> str:
    """The API spells the deleted state DESTORY; accept DESTROY as the same state."""
    return "DESTORY" if state == "DESTROY" else state


class AppMeta(Payload):
    """``app_meta``: who the app is and what may be done to its capacity."""

    app_id: str | None = None
    pass_type: str | None = None
    product: str | None = None
    module: str | None = None
    cluster: str | None = None
    account_id: str | None = None
    service_level: int | str | None = None
    bns: str | None = None
    disk_type: str | None = None
    disk_exclusive: bool | None = None
    limit_cpu_usage: Any = None
    extend_join: bool | None = None
    shrink_join: bool | None = None
    extend_mask: bool | None = None
    shrink_mask: bool | None = None
    rescale_direction_prior: Any = None
    owner: str | None = None
    manager: str | None = None


class ControlBudget(Payload):
    """``instanceControlBudget``: a budget type (e.g. MinAvailableRatio) and its value."""

    type: Any = None
    value: Any = None


class MinUsableInfo(Payload):
    """``min_usable_info``: the availability budget, kept as sent.

    Values are read from the JSON text exactly (``Decimal``) but not judged
    here: an out-of-range or odd value is the guard's to refuse, as
    ``budget_unknown``, so nothing is lost between the wire and the decision.
    """

    instanceControlBudget: ControlBudget | None = None
    minUsable: Any = None
    replica: Any = None
    replica_that_at_least_need_to_keep: Any = None


class StateBucket(Payload):
    """One state's entry in ``status_instance_top_five``."""

    #: A negative count contradicts itself: the payload is refused, never read as zero.
    value: int = Field(default=0, ge=0)
    top_five_list: list[str] = Field(default_factory=list)

    @field_validator("top_five_list", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class InstanceStatus(Payload):
    """The per-state counts of an app, with up to five instance names per state."""

    app_id: str | None = None
    total_num: int | None = Field(default=None, ge=0)
    status_instance_top_five: dict[str, StateBucket] = Field(default_factory=dict)

    @field_validator("status_instance_top_five", mode="before")
    @classmethod
    def _normalize_states(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {normalize_state(str(k)): b for k, b in v.items()}
        return v


class InstanceInfo(Payload):
    """One entry of ``instance_info_list``."""

    instance_id: str
    host_ip: str | None = None
    main_port: int | None = None
    proc_state: str | None = None
    container_state: str | None = None
    pass_agent_state: str | None = None
    frozen: bool | None = None
    bsn_disabled: bool | None = None
    under_repair: bool | None = None
    migrating: bool | None = None


class InstanceInfoList(Payload):
    instance_info_list: list[InstanceInfo] = Field(default_factory=list)


class HardLimits(Payload):
    """Hard limits of an app (undocumented shape: every field optional, all kept)."""

    cpu: Any = None
    cpu_quota: Any = None
    cpu_limit: Any = None
    memory: Any = None
    disk: Any = None


class DisabledList(Payload):
    disabled_instance_id_list: list[str] = Field(default_factory=list)


class InstanceByAddr(Payload):
    """The answer of the address lookup: the instance at ``host_ip:port``."""

    instance_id: str | None = None


class Event(Payload):
    """A monitoring event, in the shape healer defines (the API document gives none).

    An event names its instance by ``instance_id`` or only by ``host_ip`` and
    ``port``; the engine resolves the latter through the address lookup.
    """

    event_id: str | None = None
    app_id: str | None = None
    instance_id: str | None = None
    host_ip: str | None = None
    port: int | None = None
    name: str
    level: str | None = None
    status: str = "firing"
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def firing(self) -> bool:
        return self.status.lower() == "firing"


class EventList(Payload):
    events: list[Event] = Field(default_factory=list)


class ActionResult(Payload):
    """The answer to an action: which instances it succeeded and failed on.

    An instance that was asked for and is in neither list has an unknown
    outcome; ``unknown`` lists them.
    """

    success_instances: list[str] = Field(default_factory=list)
    failed_instances: list[str] = Field(default_factory=list)
    unknown_instances: list[str] = Field(default_factory=list, exclude=True)

    @field_validator("success_instances", "failed_instances", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v

    def with_requested(self, requested: list[str]) -> ActionResult:
        """Fill ``unknown_instances`` with the requested ids named in neither list."""
        seen = set(self.success_instances) | set(self.failed_instances)
        unknown = [i for i in requested if i not in seen]
        return self.model_copy(update={"unknown_instances": unknown})


def exact_decimal(value: Any) -> Decimal | None:
    """A number from a payload as an exact Decimal, or None when it is not a number.

    Booleans are not numbers here; floats are read through their shortest
    repr so that 0.14 stays 0.14, not 0.14000000000000001.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        d = Decimal(repr(value))
        return d if d.is_finite() else None
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except ArithmeticError:
            return None
        return d if d.is_finite() else None
    return None
