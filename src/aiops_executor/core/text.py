"""Strings and JSON from clients that every database can store.

PostgreSQL cannot store NUL in ``text`` or anywhere in ``jsonb`` (asyncpg raises, the client would get a 500)
while SQLite stores it: without one rule at the boundary the same request would behave differently per
database. Beyond NUL, names and ids are shown in consoles, logs and topologies, where a control character
hides or forges what is displayed, so they take none (C0, DEL, C1); free text keeps tab, newline and carriage
return, which prompts and descriptions use.

- ``NameText`` for names, aliases and ids; with constraints ``Annotated[str, StringConstraints(...), NAME_TEXT]``
  (last, so that it checks what was sent, before any stripping);
- ``FreeText`` / ``FREE_TEXT`` for descriptions, prompts and other prose;
- ``SafeJson`` for free-form JSON objects (attributes, parameters, contexts, schemas): no NUL in any key or
  string value, however deeply nested.

Each refusal is a pydantic error on the field, so it is a 422 ``VALIDATION_ERROR`` with the field's ``loc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema


@dataclass(frozen=True)
class _TextRule:
    """Refuses the characters ``forbidden`` matches, and documents it as a ``pattern`` in the OpenAPI document
    (a field with a pattern of its own, like an id, already excludes them)."""

    forbidden: str  # a character class
    rule: str

    def check(self, value: Any) -> Any:
        found = re.search(self.forbidden, value) if isinstance(value, str) else None
        if found is not None:
            raise PydanticCustomError(
                "control_character",
                "{rule} (found U+{character} at position {position})",
                {"rule": self.rule, "character": f"{ord(found.group()):04X}", "position": found.start()},
            )
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # Before the string's own constraints: what is checked is what was sent, not what stripping left.
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.setdefault("pattern", f"^[^{self.forbidden[1:-1]}]*$")
        return json_schema


NAME_TEXT = _TextRule(r"[\x00-\x1f\x7f-\x9f]", "must not contain control characters")
FREE_TEXT = _TextRule(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", "must not contain control characters other than tab and line breaks"
)


def _json_path(path: list[str | int]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def _nul_free_json(value: Any) -> Any:
    # Walked with a stack, not recursion: the body parser already bounds the depth, this must not fail on it.
    pending: list[tuple[list[str | int], Any]] = [([], value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise PydanticCustomError(
                    "nul_character", "a string must not contain NUL (U+0000), at {path}", {"path": _json_path(path)}
                )
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in str(key):
                    raise PydanticCustomError(
                        "nul_character", "a key must not contain NUL (U+0000), at {path}", {"path": _json_path(path)}
                    )
                pending.append(([*path, str(key)], child))
        elif isinstance(item, list | tuple):
            pending.extend(([*path, index], child) for index, child in enumerate(item))
    return value


NameText = Annotated[str, NAME_TEXT]
FreeText = Annotated[str, FREE_TEXT]
# Not in the OpenAPI document: JSON Schema cannot say "no NUL at any depth" without a recursive $ref.
SafeJson = Annotated[dict[str, Any], AfterValidator(_nul_free_json)]


def shorten(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in "..." when cut; "" for None."""
    value = text or ""
    return value if len(value) <= limit else value[: max(limit - 3, 0)] + "..."
