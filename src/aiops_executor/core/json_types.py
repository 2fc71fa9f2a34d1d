"""Scalar types for request bodies that mean what the OpenAPI document says (JSON Schema's types).

Request bodies are validated in pydantic's lax Python mode, which would take ``0`` for ``false``, ``true`` for
``1`` and ``"5"`` for ``5``: values the document calls invalid. ``StrictBool`` and ``StrictFloat`` (which
takes integers, as JSON Schema's ``number`` does) cover booleans and numbers. An integer must be a JSON number
with an integral value (``5`` or ``5.0``), never a boolean or a string: ``JsonInt``, or, with constraints,
``Annotated[int, Field(ge=0, le=10), JSON_INT]``. The constraints go before ``JSON_INT`` inside the
``Annotated``: applied on top of the validator (``JsonInt | None = Field(ge=0)``) they would still hold, but
pydantic could not express them in the JSON schema.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError


def _json_number(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


JSON_INT = BeforeValidator(_json_number)
JsonInt = Annotated[int, JSON_INT]


def _not_a_number(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date-time string")
    return value


# A timestamp in a body is an ISO 8601 string with a timezone (pydantic would also read a number as Unix time);
# built in Python, a datetime.
JsonDatetime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


def _not_numeric_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date-time string")
    return _not_a_number(value)


# The same in a query string, where every value arrives as text: "1700000000" is refused rather than read as Unix
# time.
QueryDatetime = Annotated[AwareDatetime, BeforeValidator(_not_numeric_text)]
