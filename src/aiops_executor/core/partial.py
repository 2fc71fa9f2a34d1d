"""Partial-update bodies: fields that may be omitted (keep their value) but not set to null.

Such a field is typed ``X | None = None`` so that "omitted" can be told apart, and a before-validator rejects
an explicit null. ``not_nullable`` makes the JSON schema say the same (``X``, not ``X or null``), so that the
OpenAPI document does not advertise a value the service refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_NULL = {"type": "null"}


def _drop_null(schema: dict[str, Any]) -> None:
    options = schema.get("anyOf")
    if not isinstance(options, list) or _NULL not in options:
        return
    remaining = [option for option in options if option != _NULL]
    del schema["anyOf"]
    if len(remaining) == 1:
        schema.update(remaining[0])
    else:
        schema["anyOf"] = remaining
    if "default" in schema and schema["default"] is None:
        del schema["default"]


def not_nullable(*fields: str) -> Callable[[dict[str, Any]], None]:
    """A model's ``json_schema_extra``: these fields, when present, are not null (empty: every field)."""

    def adjust(schema: dict[str, Any]) -> None:
        properties: dict[str, Any] = schema.get("properties", {})
        for name, field_schema in properties.items():
            if not fields or name in fields:
                _drop_null(field_schema)

    return adjust
