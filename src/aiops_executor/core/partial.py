"""Partial-update bodies: fields that may be omitted (keep their value) but not set to null.

Such a field is typed ``X | None = None`` so that "omitted" can be told apart. ``PartialUpdate`` refuses an
explicit null for the fields it names in ``not_null`` (every field when ``not_null`` is ``ALL_FIELDS``) and
makes the JSON schema say the same (``X``, not ``X or null``), so that the OpenAPI document does not
advertise a value the service refuses.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

_NULL = {"type": "null"}
ALL_FIELDS: tuple[str, ...] = ()


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


def _schema_without_nulls(schema: dict[str, Any], model: type[BaseModel]) -> None:
    guarded = model.not_null_fields() if issubclass(model, PartialUpdate) else ()
    properties: dict[str, Any] = schema.get("properties", {})
    for name, field_schema in properties.items():
        if name in guarded:
            _drop_null(field_schema)


class PartialUpdate(BaseModel):
    """Base of partial-update bodies; subclasses list the fields that may be omitted but not null."""

    model_config = ConfigDict(json_schema_extra=_schema_without_nulls)

    not_null: ClassVar[tuple[str, ...]] = ALL_FIELDS

    @classmethod
    def not_null_fields(cls) -> tuple[str, ...]:
        return cls.not_null or tuple(cls.model_fields)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, values: Any) -> Any:
        if isinstance(values, dict):
            nulls = [name for name in cls.not_null_fields() if name in values and values[name] is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls)} may be omitted but not null")
        return values
