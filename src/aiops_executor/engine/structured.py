"""Structured output against a caller's JSON Schema: ask, validate, feed the errors back, at most 3 times."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

MAX_ATTEMPTS = 3
MAX_ERRORS_REPORTED = 20
DEFAULT_TITLE = "StructuredResult"


class InvalidOutputSchema(ValueError):
    """The schema itself is not a valid JSON Schema."""


@dataclass
class StructuredOutcome:
    valid: bool
    output: Any
    errors: list[dict[str, str]] = field(default_factory=list)
    attempts: int = 0
    raw_output: str | None = None


def check_schema(schema: dict[str, Any]) -> None:
    try:
        validators.validator_for(schema).check_schema(schema)
    except jsonschema_exceptions.SchemaError as exc:
        raise InvalidOutputSchema(f"output_schema is not a valid JSON Schema: {exc.message}") from exc
    if schema.get("type", "object") != "object":
        raise InvalidOutputSchema('output_schema must describe a JSON object ("type": "object")')


def json_path(parts: Sequence[Any]) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def schema_errors(schema: dict[str, Any], value: Any) -> list[dict[str, str]]:
    validator = validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [{"path": json_path(e.absolute_path), "message": e.message} for e in errors[:MAX_ERRORS_REPORTED]]


def _tool_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Function-calling needs a name and a description; the caller's schema may have neither."""
    named = dict(schema)
    named.setdefault("title", DEFAULT_TITLE)
    named.setdefault("description", "The structured result of the investigation.")
    named.setdefault("type", "object")
    return named


def _raw_text(raw: Any) -> str | None:
    if isinstance(raw, AIMessage):
        if raw.tool_calls:
            return json.dumps(raw.tool_calls[0]["args"], ensure_ascii=False, default=str)
        return str(raw.content) if raw.content else None
    return None


async def generate_structured_output(
    model: BaseChatModel,
    schema: dict[str, Any],
    instructions: str,
    brief: str,
    reports: Sequence[str],
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> StructuredOutcome:
    """Asks ``model`` for an object matching ``schema`` from the brief and the reports; validates every answer."""
    check_schema(schema)
    structured = model.with_structured_output(_tool_schema(schema), include_raw=True)
    messages: list[BaseMessage] = [
        SystemMessage(instructions),
        HumanMessage(brief),
        *(AIMessage(text) for text in reports),
        HumanMessage(f"Answer with a JSON object matching this JSON Schema:\n{json.dumps(schema)}"),
    ]
    outcome = StructuredOutcome(valid=False, output=None)
    for attempt in range(1, max_attempts + 1):
        answer = await structured.ainvoke(messages)
        parsed = answer.get("parsed") if isinstance(answer, dict) else answer
        raw = _raw_text(answer.get("raw")) if isinstance(answer, dict) else None
        outcome = StructuredOutcome(valid=False, output=parsed, attempts=attempt, raw_output=raw)
        if parsed is None:
            outcome.errors = [{"path": "$", "message": "the model did not return a JSON object"}]
        else:
            outcome.errors = schema_errors(schema, parsed)
        if not outcome.errors:
            outcome.valid = True
            return outcome
        feedback = "\n".join(f"- {e['path']}: {e['message']}" for e in outcome.errors)
        messages.append(AIMessage(raw or ""))
        messages.append(HumanMessage(f"That answer does not match the schema:\n{feedback}\nAnswer again, corrected."))
    return outcome
