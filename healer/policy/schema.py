"""The JSON Schema of a policy file, for editors and for CI outside healer.

Generated from the pydantic models so that it cannot drift from what the
loader accepts; ``policies/policy.schema.json`` is a committed copy, and a
test keeps it current. The schema checks shape only: positions, duration
order and cross-field rules (an escalation back to the policy's own action)
are healer's own checks (``healer validate``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from healer.policy.durations import format_duration
from healer.policy.model import Policy

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://healer.invalid/policy.schema.json"


class _Generator(GenerateJsonSchema):
    def encode_default(self, dft: Any) -> Any:
        # Defaults read as an SRE writes them: "10m", not "PT10M".
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def policy_schema() -> dict[str, Any]:
    """The schema of one policy document (a file holds one or more, ``---`` separated)."""
    schema = Policy.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "healer policy",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def policy_schema_text() -> str:
    """The schema as committed in ``policies/policy.schema.json``."""
    return json.dumps(policy_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
