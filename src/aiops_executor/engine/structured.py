"""Structured answers from any model server: a caller's JSON Schema (ask, validate, feed the errors back, at
most 3 times) and the supervisors' routing choices.

Servers differ in what they accept, so an answer is asked for with one of three strategies, in the order the
model prefers (a model may say so with ``structured_output_strategies``; the runtime's models take it from
their provider's adapter and put first what worked before):

- ``json_schema``: the server enforces the schema (OpenAI's ``response_format``; llama.cpp, vLLM and Ollama
  compile it into a grammar);
- ``tool_calling``: the answer is a call of one tool, named in ``tool_choice`` (several servers reject
  ``tool_choice="required"``, which LangChain's default asks for);
- ``prompted_json``: the prompt asks for a JSON object; the text is parsed, then validated like the others.

A strategy the server rejects (the call fails with a rejected request or a server error) or ignores (no
object in the answer) moves on to the next one; what worked is remembered by the model for its next calls.
A provider that is down, throttling or refusing the key fails the call at once: another strategy would not help.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from aiops_executor.core.control_flow import pass_control_flow
from aiops_executor.core.text import shorten

MAX_ATTEMPTS = 3
JSON_SCHEMA = "json_schema"
TOOL_CALLING = "tool_calling"
PROMPTED_JSON = "prompted_json"
DEFAULT_STRATEGIES = (TOOL_CALLING, PROMPTED_JSON)
_LANGCHAIN_METHODS = {JSON_SCHEMA: "json_schema", TOOL_CALLING: "function_calling"}
# Failures another strategy cannot get round (error codes of the model runtime's ProviderCallError).
_NOT_THE_STRATEGY = frozenset(
    {
        "PROVIDER_UNREACHABLE",
        "CREDENTIAL_INVALID",
        "PROVIDER_RATE_LIMITED",
        "NO_USABLE_CREDENTIAL",
        "CREDENTIAL_UNDECRYPTABLE",
    }
)
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


MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_INLINED_REFERENCES = 1000
# Keywords that reach a schema by reference; the dynamic ones are resolved at validation time, so cannot be
# checked beforehand.
_DYNAMIC_REFERENCES = ("$dynamicRef", "$recursiveRef")


def _schema_depth(schema: Any) -> int:
    deepest, pending = 0, [(schema, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if deepest > MAX_SCHEMA_DEPTH:
                break
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _local_references(value: Any, path: str = "#") -> list[tuple[str, str]]:
    """(where, target) of each ``$ref`` in ``value``, both as JSON pointers into the schema."""
    found: list[tuple[str, str]] = []
    pending = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, dict):
            for keyword in _DYNAMIC_REFERENCES:
                if keyword in item:
                    raise InvalidOutputSchema(f"output_schema must not use {keyword} (at {where})")
            reference = item.get("$ref")
            if isinstance(reference, str):
                if not reference.startswith("#"):
                    raise InvalidOutputSchema(
                        f"output_schema may only refer to its own definitions (#/...), not to {reference!r} "
                        f"(at {where}): remote references are not fetched"
                    )
                if reference != "#" and not reference.startswith("#/"):
                    raise InvalidOutputSchema(
                        f"output_schema's $ref {reference!r} (at {where}) must be a JSON pointer (#/...); "
                        "anchors are not supported"
                    )
                found.append((where, reference))
            pending.extend((child, f"{where}/{_escape(str(key))}") for key, child in item.items())
        elif isinstance(item, list):
            pending.extend((child, f"{where}/{index}") for index, child in enumerate(item))
    return found


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _resolve(schema: dict[str, Any], pointer: str) -> Any:
    target: Any = schema
    for raw in pointer.removeprefix("#").split("/")[1:]:
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
            target = target[int(token)]
        else:
            raise InvalidOutputSchema(f"output_schema's $ref {pointer!r} points at nothing in the schema")
    return target


def _check_references(schema: dict[str, Any]) -> None:
    """Every ``$ref`` points into the schema itself and none leads back to itself: a cycle makes validation
    (and the conversion of the schema into a model's tool definition, which inlines references) recurse
    without end. Inlined, the references must also stay few: ten definitions each naming the next twice
    are a thousand copies."""
    references = _local_references(schema)
    # A reference reaches every reference inside the subschema it targets.
    reaches: dict[str, list[str]] = {}
    for where, target in references:
        _resolve(schema, target)
        prefix = unquote(target)
        reaches[where] = [
            other for other, _ in references if prefix == "#" or other == prefix or other.startswith(f"{prefix}/")
        ]
    copies: dict[str, int] = {}  # a finished reference: how many subschemas inlining it makes
    visiting: set[str] = set()
    for start in reaches:
        if start in copies:
            continue
        visiting.add(start)
        stack = [(start, iter(reaches[start]))]
        while stack:
            node, successors = stack[-1]
            successor = next(successors, None)
            if successor is None:
                stack.pop()
                visiting.discard(node)
                copies[node] = min(1 + sum(copies[other] for other in reaches[node]), MAX_INLINED_REFERENCES + 1)
            elif successor in visiting:
                raise InvalidOutputSchema(
                    f"output_schema's $ref at {successor} leads back to itself; recursive schemas are not supported"
                )
            elif successor not in copies:
                visiting.add(successor)
                stack.append((successor, iter(reaches[successor])))
    if sum(copies.values()) > MAX_INLINED_REFERENCES:
        raise InvalidOutputSchema(
            f"output_schema's references expand to more than {MAX_INLINED_REFERENCES} subschemas when inlined"
        )


def check_schema(schema: dict[str, Any]) -> None:
    """A caller's schema is checked before any use: size, depth, references, then the meta-schema."""
    try:
        size = len(json.dumps(schema, ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise InvalidOutputSchema("output_schema is not a JSON document") from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidOutputSchema(f"output_schema is too large: {size} bytes, at most {MAX_SCHEMA_BYTES}")
    if _schema_depth(schema) > MAX_SCHEMA_DEPTH:
        raise InvalidOutputSchema(f"output_schema is nested too deeply: at most {MAX_SCHEMA_DEPTH} levels")
    _check_references(schema)
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


@dataclass
class StructuredAnswer:
    """One structured answer: the object (None when the answer held none, with ``problem`` saying why)."""

    value: Any
    raw: BaseMessage | None
    strategy: str
    problem: str = ""


def strategies_of(model: BaseChatModel) -> tuple[str, ...]:
    preferred = getattr(model, "structured_output_strategies", None)
    return tuple(preferred) if preferred else DEFAULT_STRATEGIES


def _remember(model: BaseChatModel, strategy: str) -> None:
    remember = getattr(model, "remember_structured_output_strategy", None)
    if callable(remember):
        remember(strategy)


def _another_strategy_may_help(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) not in _NOT_THE_STRATEGY


def parse_json_object(text: str) -> Any:
    """The JSON object in a model's text: the whole text, or inside a code fence, or from the first ``{`` to
    the last ``}`` (models like to wrap JSON in prose). None when there is none."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _plain(message: BaseMessage | None) -> str:
    if not isinstance(message, BaseMessage):
        return ""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content if b is not None)


def _coerce(schema: dict[str, Any] | type[BaseModel], value: Any) -> tuple[Any, str]:
    """A parsed object as the caller wants it (a pydantic schema validates it), or None and why."""
    if value is None or not isinstance(schema, type):
        return value, ""
    if isinstance(value, schema):
        return value, ""
    try:
        return schema.model_validate(value), ""
    except ValidationError:
        return None, f"its answer is not one of the choices offered: {shorten(json.dumps(value, default=str), 200)}"


def _missing(raw: BaseMessage | None) -> str:
    said = _plain(raw).strip()
    if said:
        return f'it answered in plain words, not with the structured answer asked for: "{shorten(said, 200)}"'
    return "it gave an empty answer"


async def _ask_with(
    model: BaseChatModel,
    strategy: str,
    schema: dict[str, Any] | type[BaseModel],
    messages: list[BaseMessage],
) -> StructuredAnswer:
    if strategy == PROMPTED_JSON:
        json_schema = schema.model_json_schema() if isinstance(schema, type) else schema
        ask = HumanMessage(
            "Answer with only a JSON object (no prose, no code fence) matching this JSON Schema:\n"
            + json.dumps(json_schema)
        )
        reply = await model.ainvoke([*messages, ask])
        found = parse_json_object(_plain(reply))
        value, problem = _coerce(schema, found)
        return StructuredAnswer(value, reply, strategy, problem or ("" if value is not None else _missing(reply)))
    structured = model.with_structured_output(schema, method=_LANGCHAIN_METHODS[strategy], include_raw=True)
    answer = await structured.ainvoke(messages)
    parts: dict[str, Any] = answer if isinstance(answer, dict) else {"parsed": answer}
    raw = parts.get("raw") if isinstance(parts.get("raw"), BaseMessage) else None
    value = parts.get("parsed")
    if value is None and isinstance(raw, AIMessage) and raw.tool_calls:
        # The one tool it was asked to call, under a name some servers garble, or with arguments that do not
        # fit a pydantic schema (said below).
        value = raw.tool_calls[0]["args"]
    value, problem = _coerce(schema, value)
    if value is None and not problem:
        problem = _missing(raw)
    return StructuredAnswer(value, raw, strategy, problem)


async def ask_structured(
    model: BaseChatModel, schema: dict[str, Any] | type[BaseModel], messages: list[BaseMessage]
) -> StructuredAnswer:
    """The model's answer as an object of ``schema``, trying its strategies in order (see the module docstring).
    Raises when the provider fails the call in a way no strategy can avoid, or when every strategy's call
    failed (the last failure)."""
    failure: Exception | None = None
    answer: StructuredAnswer | None = None
    for strategy in strategies_of(model):
        try:
            attempt = await _ask_with(model, strategy, schema, messages)
        except Exception as exc:
            pass_control_flow(exc)
            if not _another_strategy_may_help(exc):
                raise
            failure = exc
            continue
        if attempt.value is not None:
            _remember(model, strategy)
            return attempt
        answer = answer or attempt  # the first answer's problem is the one to report
    if answer is not None:
        return answer
    assert failure is not None
    raise failure


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
    tool_schema = _tool_schema(schema)
    messages: list[BaseMessage] = [
        SystemMessage(instructions),
        HumanMessage(brief),
        *(AIMessage(text) for text in reports),
        HumanMessage(f"Answer with a JSON object matching this JSON Schema:\n{json.dumps(schema)}"),
    ]
    outcome = StructuredOutcome(valid=False, output=None)
    for attempt in range(1, max_attempts + 1):
        answer = await ask_structured(model, tool_schema, messages)
        parsed = answer.value
        raw = _raw_text(answer.raw)
        outcome = StructuredOutcome(valid=False, output=parsed, attempts=attempt, raw_output=raw)
        if parsed is None:
            outcome.errors = [{"path": "$", "message": f"no JSON object in the answer: {answer.problem}"}]
        else:
            outcome.errors = schema_errors(schema, parsed)
        if not outcome.errors:
            outcome.valid = True
            return outcome
        feedback = "\n".join(f"- {e['path']}: {e['message']}" for e in outcome.errors)
        messages.append(AIMessage(raw or ""))
        messages.append(HumanMessage(f"That answer does not match the schema:\n{feedback}\nAnswer again, corrected."))
    return outcome
