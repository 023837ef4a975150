"""The policy language: what an SRE may write in a policy file, as pydantic models.

A policy file holds one or more policies; each says which apps (``select``),
which instances (``when``), what to do (``action``), how often (``limits``),
how to check it worked (``verify``) and what to do when it does not
(``escalate``). This module only defines and checks the shape; the loader
(``loader.py``) turns YAML into these models with exact error positions, and
``evaluate.py`` turns them and a snapshot into proposals. What the guard needs
of a policy leaves this package as a plain ``healer.model.PolicyRules``.

Every model forbids unknown keys, so a misspelt key is an error, never a
silently ignored wish. Shapes that accept two forms (``status: UNKNOWN`` or a
list; ``action: restart`` or a mapping) are tagged unions, so that an error
inside one still points at the exact list item or key.

Example::

    name: restart-unknown
    select: {service_level: [1, 2], exclude: {app_id: ["payments-*"]}}
    when: {status: [UNKNOWN], for: 1m}
    action: restart
    limits: {per_cycle: 1, per_app_per_hour: 3, instance_cooldown: 15m}
    escalate: {after: 2, within: 1h, to: migrate}
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from healer.cloudpilot.models import KNOWN_STATES, Action, AppMeta, normalize_state
from healer.model import PolicyRules
from healer.policy.durations import Duration, format_duration

# --- small value types -------------------------------------------------------------------------


Count = Annotated[int, Field(strict=True, ge=0)]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        msg = (
            f"bad policy name {value!r}: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 64 characters"
        )
        raise ValueError(msg)
    return value


PolicyName = Annotated[
    str,
    Field(strict=True),
    AfterValidator(_check_name),
    WithJsonSchema({"type": "string", "pattern": _NAME.pattern}),
]


def _share(value: Any) -> Any:
    """``50%`` or ``0.5`` to 0.5; anything outside [0, 1] is an error, never guessed at."""
    hint = "write a share like 50% or 0.5"
    if isinstance(value, bool):
        raise ValueError(f"{hint}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{hint}, got {value!r}")
        try:
            number = Decimal(text[:-1].strip()) / 100
        except InvalidOperation:
            raise ValueError(f"{hint}, got {value!r}") from None
    elif isinstance(value, int | float):
        number = Decimal(repr(value))
    else:
        raise ValueError(f"{hint}, got {value!r}")
    if not number.is_finite() or not 0 <= number <= 1:
        raise ValueError(f"must be between 0% and 100% (0 and 1), got {value!r}")
    return float(number)


Share = Annotated[
    float,
    BeforeValidator(_share),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?%$"},
            ],
            "description": "a share of the desired replicas: 50% or 0.5",
        }
    ),
]


class Strict(BaseModel):
    """Base of every policy model: unknown keys are errors; values never change after loading.

    A key written with no value (``app_id: ~``) is an error too. Read as "absent",
    it would widen what the key narrows: a selector of every app, a condition that
    always holds, a limit that is gone.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        # Runs only for keys that were written: a key left out still takes its default.
        if value is None:
            raise PydanticCustomError(
                "null_value", "a key without a value is not allowed; leave the key out instead"
            )
        return value


# --- conditions ---------------------------------------------------------------------------------


def _one_or_many(value: Any) -> Any:
    """``status: UNKNOWN`` is short for ``status: [UNKNOWN]``."""
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def _match_form(value: Any) -> str:
    return "[not]" if isinstance(value, dict) else "[values]"


def _check_state(value: str) -> str:
    state = normalize_state(value.strip().upper())
    if state not in KNOWN_STATES:
        msg = f"unknown instance state {value!r}; known states: {', '.join(KNOWN_STATES)}"
        raise ValueError(msg)
    return state


def _check_value(value: str) -> str:
    if not value.strip():
        raise ValueError("empty value")
    return value.strip()


StateName = Annotated[str, Field(strict=True), AfterValidator(_check_state)]
FieldValue = Annotated[str, Field(strict=True), AfterValidator(_check_value)]


class NotStates(Strict):
    """``{not: [RUNNING]}``: any state except these."""

    not_: list[StateName] = Field(alias="not", min_length=1)


class NotValues(Strict):
    """``{not: [RUNNING, OK]}``: any value except these (a missing value still never matches)."""

    not_: list[FieldValue] = Field(alias="not", min_length=1)


def _any_case(word: str) -> str:
    """A pattern matching ``word`` in any case (JSON Schema patterns have no ``(?i)``)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


#: A state as the loader reads it: the names in capitals for editors to offer, and any
#: case, with spaces around, as ``_check_state`` accepts.
_STATE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "enum": [*KNOWN_STATES, "DESTROY"]},
        {
            "type": "string",
            "pattern": r"^\s*(?:"
            + "|".join(_any_case(s) for s in (*KNOWN_STATES, "DESTROY"))
            + r")\s*$",
        },
    ]
}


def _match_schema(item: dict[str, Any]) -> dict[str, Any]:
    many = {"type": "array", "items": item, "minItems": 1}
    return {
        "anyOf": [
            item,
            many,
            {
                "type": "object",
                "properties": {"not": {"anyOf": [item, many]}},
                "required": ["not"],
                "additionalProperties": False,
            },
        ]
    }


StateMatch = Annotated[
    Annotated[list[StateName], Field(min_length=1), Tag("[values]")]
    | Annotated[NotStates, Tag("[not]")],
    Discriminator(_match_form),
    BeforeValidator(_one_or_many),
    WithJsonSchema(_match_schema(_STATE_SCHEMA)),
]

ValueMatch = Annotated[
    Annotated[list[FieldValue], Field(min_length=1), Tag("[values]")]
    | Annotated[NotValues, Tag("[not]")],
    Discriminator(_match_form),
    BeforeValidator(_one_or_many),
    WithJsonSchema(_match_schema({"type": "string", "minLength": 1})),
]


class EventMatch(Strict):
    """An open (firing) event naming the instance: ``event: proc_dead`` or
    ``event: {name: proc_dead, level: [critical, major]}``."""

    name: FieldValue
    level: (
        Annotated[list[FieldValue], Field(min_length=1), BeforeValidator(_one_or_many)] | None
    ) = None


def _event_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


_TEXTS = {"type": "string", "minLength": 1}
EventField = Annotated[
    EventMatch,
    BeforeValidator(_event_shorthand),
    WithJsonSchema(
        {
            "anyOf": [
                _TEXTS,
                {
                    "type": "object",
                    "properties": {
                        "name": _TEXTS,
                        "level": {
                            "anyOf": [_TEXTS, {"type": "array", "items": _TEXTS, "minItems": 1}]
                        },
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                },
            ],
            "description": "a firing event naming the instance, by name and optionally level",
        }
    ),
]


#: Instance fields a ``when`` can test, besides ``status`` and ``event``.
VALUE_FIELDS: tuple[str, ...] = ("proc_state", "container_state", "pass_agent_state")
FLAG_FIELDS: tuple[str, ...] = ("frozen", "disabled", "under_repair", "migrating")

Flag = Annotated[bool, Field(strict=True)]


class When(Strict):
    """Which instances a policy acts on: every condition given must hold, for ``for``.

    Field conditions take a list of accepted values or ``{not: [...]}``; values
    compare case-blind. A field that is missing, null or failed to load never
    matches, not even ``{not: [...]}``: a probe error is never a fault.
    """

    status: StateMatch | None = None
    proc_state: ValueMatch | None = None
    container_state: ValueMatch | None = None
    pass_agent_state: ValueMatch | None = None
    frozen: Flag | None = None
    disabled: Flag | None = None
    under_repair: Flag | None = None
    migrating: Flag | None = None
    event: EventField | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")

    @model_validator(mode="after")
    def _some_condition(self) -> When:
        # An empty `when` would match every instance of every selected app.
        if not self.conditions():
            msg = (
                "'when' needs at least one condition besides 'for' (it would match every instance)"
            )
            raise ValueError(msg)
        return self

    def conditions(self) -> list[str]:
        """The condition keys set in this ``when``, in declaration order."""
        return [
            name
            for name in ("status", *VALUE_FIELDS, *FLAG_FIELDS, "event")
            if getattr(self, name) is not None
        ]


# --- selection ----------------------------------------------------------------------------------


def _glob_text(value: Any) -> Any:
    """Service levels are numbers in YAML and in app_meta; globs compare their text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Glob = Annotated[
    str,
    BeforeValidator(_glob_text),
    Field(strict=True, min_length=1),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}),
]
Globs = Annotated[
    list[Glob],
    Field(min_length=1),
    BeforeValidator(_one_or_many),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "integer"},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
                },
            ]
        }
    ),
]

#: app_meta fields a selector can match, besides ``app_id``.
META_FIELDS: tuple[str, ...] = ("product", "module", "cluster", "service_level", "pass_type")


class Selector(Strict):
    """Apps whose fields match a glob in every list given (``web-*``, ``[1, 2]``)."""

    product: Globs | None = None
    module: Globs | None = None
    cluster: Globs | None = None
    service_level: Globs | None = None
    pass_type: Globs | None = None
    app_id: Globs | None = None

    def fields(self) -> dict[str, list[str]]:
        """The fields set, each with its globs."""
        return {
            name: globs
            for name in (*META_FIELDS, "app_id")
            if (globs := getattr(self, name)) is not None
        }


FieldPatterns = tuple[tuple[str, re.Pattern[str]], ...]


def _patterns(fields: dict[str, list[str]]) -> FieldPatterns:
    """Each field's globs as one anchored pattern (fnmatch's case-sensitive translation)."""
    return tuple(
        (name, re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)))
        for name, globs in fields.items()
    )


def _app_value(meta: AppMeta | None, name: str, app_id: str) -> str | None:
    """The text a selector field compares: the app id, or a meta field (None when absent)."""
    if name == "app_id":
        return app_id
    value = getattr(meta, name, None) if meta is not None else None
    if value is None or isinstance(value, bool):
        return None
    return str(value).strip() or None


@dataclass(frozen=True, slots=True)
class AppMatcher:
    """A ``Select`` compiled: an app must match every ``wanted`` field and no ``unwanted`` one.

    A field the app's meta lacks (missing, null, empty) matches no glob: the
    app is not selected by it, and not excluded by it either.
    """

    #: field → one pattern for all its globs; an app must match every one
    wanted: FieldPatterns
    #: field → one pattern for all its globs; an app matching any is excluded
    unwanted: FieldPatterns

    def __call__(self, app_id: str, meta: AppMeta | None) -> bool:
        for name, pattern in self.wanted:
            value = _app_value(meta, name, app_id)
            if value is None or not pattern.match(value):
                return False
        for name, pattern in self.unwanted:
            value = _app_value(meta, name, app_id)
            if value is not None and pattern.match(value):
                return False
        return True


class Select(Selector):
    """Which apps a policy, a maintenance window or a silence applies to: all when empty.

    ``exclude`` removes apps matching any of its fields; ``exclude_app_ids``
    is short for ``exclude: {app_id: [...]}``.
    """

    # The one selector of healer (this docstring is the schema's description, so
    # the note lives here): policies, maintenance windows and silences all match
    # apps through `matches`.

    exclude: Selector | None = None
    exclude_app_ids: Globs | None = None

    @cached_property
    def matcher(self) -> AppMatcher:
        unwanted = dict(self.exclude.fields()) if self.exclude else {}
        if self.exclude_app_ids:
            unwanted["app_id"] = [*unwanted.get("app_id", []), *self.exclude_app_ids]
        return AppMatcher(wanted=_patterns(self.fields()), unwanted=_patterns(unwanted))

    def matches(self, app_id: str, meta: AppMeta | None) -> bool:
        """Whether the app is selected: every field given matches, no exclusion does.

        Globs are shell-style and case-sensitive (``web-*``, ``[12]``).
        """
        return self.matcher(app_id, meta)


# --- what to do ---------------------------------------------------------------------------------


def _check_param(value: Any) -> Any:
    if not isinstance(value, str | int | float | bool):
        raise ValueError("expected text, a number or true/false")
    return value


Param = Annotated[
    Any,
    AfterValidator(_check_param),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
_RESERVED_PARAMS = frozenset({"app_id", "instance_ids"})


class ActionSpec(Strict):
    """``action: restart``, or ``action: {type: restart, params: {...}}``.

    ``params`` are passed along on the proposal; CloudPilot documents none for
    any action today, so the executor decides what it sends.
    """

    type: Action
    params: dict[str, Param] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_reserved_params(self) -> ActionSpec:
        reserved = sorted(_RESERVED_PARAMS & set(self.params))
        if reserved:
            raise PydanticCustomError(
                "policy_rule",
                "params may not set {keys}: healer sets them",
                {"keys": ", ".join(reserved), "path": "params"},
            )
        return self


def _action_shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


_ACTIONS = [a.value for a in Action]
ActionField = Annotated[
    ActionSpec,
    BeforeValidator(_action_shorthand),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": _ACTIONS},
                {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "enum": _ACTIONS},
                        "params": {
                            "type": "object",
                            "additionalProperties": {"type": ["string", "number", "boolean"]},
                        },
                    },
                    "required": ["type"],
                    "additionalProperties": False,
                },
            ],
            "description": "one of the ten CloudPilot instance actions",
        }
    ),
]


class Limits(Strict):
    """How often a policy may act; unset limits fall back to the guard's configuration."""

    per_cycle: Count | None = None
    per_app_per_hour: Count | None = None
    instance_cooldown: Duration | None = None


class Verify(Strict):
    """When an action counts as healed: back RUNNING and healthy for ``healthy_for``,
    within ``timeout`` of being issued; otherwise it is ``not_healed``."""

    timeout: Duration = timedelta(minutes=10)
    healthy_for: Duration = timedelta(0)

    @model_validator(mode="after")
    def _positive_timeout(self) -> Verify:
        if self.timeout <= timedelta(0):
            raise PydanticCustomError(
                "policy_rule", "verify timeout must be longer than 0s", {"path": "timeout"}
            )
        if self.healthy_for >= self.timeout:
            raise PydanticCustomError(
                "policy_rule",
                "healthy_for ({healthy_for}) must be shorter than timeout ({timeout})",
                {
                    "path": "healthy_for",
                    "healthy_for": format_duration(self.healthy_for),
                    "timeout": format_duration(self.timeout),
                },
            )
        return self


class Escalate(Strict):
    """After ``after`` unhealed attempts within ``within``, propose ``to`` instead."""

    after: Annotated[int, Field(strict=True, ge=1)]
    within: Duration = timedelta(hours=1)
    to: Action

    @model_validator(mode="after")
    def _positive_window(self) -> Escalate:
        if self.within <= timedelta(0):
            raise PydanticCustomError(
                "policy_rule", "escalate window must be longer than 0s", {"path": "within"}
            )
        return self


# --- the policy ---------------------------------------------------------------------------------


class Policy(Strict):
    """One policy, as written in a policy file."""

    name: PolicyName
    description: Annotated[str, Field(strict=True)] = ""
    enabled: Flag = True
    dry_run: Flag = False
    priority: Annotated[int, Field(strict=True)] = 0
    select: Select = Field(default_factory=Select)
    when: When
    action: ActionField
    limits: Limits = Field(default_factory=Limits)
    verify: Verify = Field(default_factory=Verify)
    escalate: Escalate | None = None
    max_in_flight: Count | None = None
    max_unhealthy: Share | None = None

    @model_validator(mode="after")
    def _no_escalation_cycle(self) -> Policy:
        # A policy has one escalation step, so the only cycle is back to its own action.
        if self.escalate is not None and self.escalate.to == self.action.type:
            raise PydanticCustomError(
                "policy_rule",
                "escalation cycle: escalate.to is this policy's own action '{action}'",
                {"action": self.action.type.value, "path": "escalate.to"},
            )
        return self

    @cached_property
    def cached_rules(self) -> PolicyRules:
        escalate = self.escalate
        return PolicyRules(
            name=self.name,
            priority=self.priority,
            dry_run=self.dry_run,
            per_cycle=self.limits.per_cycle,
            per_app_per_hour=self.limits.per_app_per_hour,
            instance_cooldown=self.limits.instance_cooldown,
            max_in_flight=self.max_in_flight,
            max_unhealthy=self.max_unhealthy,
            verify_timeout=self.verify.timeout,
            healthy_for=self.verify.healthy_for,
            escalate_after=escalate.after if escalate else None,
            escalate_within=escalate.within if escalate else None,
            escalate_to=escalate.to if escalate else None,
        )

    def rules(self) -> PolicyRules:
        """What the guard and the engine need of this policy, as a plain value."""
        return self.cached_rules
