"""Named tools with pydantic argument schemas, and the registry agents take them from.

A tool is an async function of its validated arguments and a ``ToolContext`` (the node it runs for).
Connection details for the systems a tool inspects come from the node's attributes when the model leaves
the argument out, so an agent can work with what the topology points it at. A tool never raises into the
run: ``ToolRegistry.invoke`` turns every failure into a structured result (``ToolOutcome`` with
``status="error"``) the agent can read -- except cancellation, which always propagates.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel, ValidationError

from aiops_executor.core.control_flow import pass_control_flow
from aiops_executor.core.egress import policy_for
from aiops_executor.core.text import shorten
from aiops_executor.tools.verdicts import Verdict, outcome_verdict

if TYPE_CHECKING:
    from aiops_executor.core.settings import Settings

logger = structlog.get_logger(__name__)

DEFAULT_OUTPUT_MAX_CHARS = 8_000
MAX_ERROR_MESSAGE_CHARS = 500
REDACTED = "***"

# Keys of ToolContext.settings (built by ``tool_settings``).
SETTING_PROMETHEUS_URL = "prometheus_url"
SETTING_TIMEOUT_SECONDS = "timeout_seconds"
SETTING_OUTPUT_MAX_CHARS = "output_max_chars"
SETTING_EGRESS_POLICY = "egress_policy"
SETTING_ALLOW_SUPERUSER = "diagnostics_allow_superuser"

# Error codes of error outcomes.
TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
TOOL_INVALID_ARGUMENTS = "TOOL_INVALID_ARGUMENTS"
TOOL_TIMEOUT = "TOOL_TIMEOUT"
TOOL_FAILED = "TOOL_FAILED"
TOOL_MISSING_TARGET = "TOOL_MISSING_TARGET"
TOOL_INVALID_TARGET = "TOOL_INVALID_TARGET"
EGRESS_DENIED = "EGRESS_DENIED"

# scheme://user:password@ -- userinfo cannot contain "/", which keeps the match out of URL paths.
_URL_CREDENTIALS = re.compile(r"(?P<prefix>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s/]+)@")
# libpq keyword DSNs and query strings: password=secret, password='se cret'.
_KEYWORD_PASSWORD = re.compile(r"(?P<key>\b(?:password|passwd|pwd)\s*=\s*)(?P<value>'[^']*'|[^\s&;]+)", re.IGNORECASE)
_SECRET_ATTRIBUTE_NAME = re.compile(r"password|passwd|secret|token|api_?key|credential", re.IGNORECASE)
_MIN_LITERAL_SECRET_CHARS = 4


@dataclass(frozen=True)
class ToolContext:
    """What a tool knows besides its arguments: the node it serves and the process's tool settings."""

    node_id: str = ""
    node_type: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    # The run and agent calling (set per call by the engine; empty outside a run), for tools that audit calls.
    execution_id: str = ""
    agent_id: str = ""
    # The run's input context (an alert group's labels and alerts, when Alertmanager started it).
    run_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolOutcome:
    status: str  # "success" or "error"
    output: dict[str, Any]
    duration_ms: float = 0.0
    # What the call observed of its target (see ``tools.verdicts``), kept apart from the output, which may be cut.
    verdict: Verdict = Verdict.unknown
    signals: list[str] = field(default_factory=list)
    observed: bool = False  # the call observed its target (see ``tools.verdicts.Judgement``)

    @property
    def ok(self) -> bool:
        return self.status == "success"


ToolFunction = Callable[[Any, ToolContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolSpec:
    """A tool. Built-in tools validate their arguments with a pydantic model (``args_schema``); tools of MCP
    servers carry the JSON schema their server published (``input_schema``) and get the arguments as a dict."""

    name: str
    description: str
    args_schema: type[BaseModel] | None
    run: ToolFunction
    timeout_seconds: float = 15.0
    # Node attributes the tool falls back to when an argument is omitted (documentation and listing only).
    attribute_keys: tuple[str, ...] = ()
    # Default thresholds of the tool's verdict, each settable per node (``thresholds.<tool>.<name>``).
    thresholds: Mapping[str, float] = field(default_factory=dict)
    input_schema: Mapping[str, Any] | None = None
    # The MCP server lending the tool (None for built-in tools), and whether its every call needs approval.
    server: str | None = None
    approval_required: bool = False

    def json_schema(self) -> dict[str, Any]:
        if self.args_schema is not None:
            return self.args_schema.model_json_schema()
        return dict(self.input_schema or {"type": "object", "properties": {}})

    def validate(self, arguments: dict[str, Any]) -> Any:
        """The validated arguments; raises ``ValidationError`` (pydantic) or ``SchemaViolation`` (JSON schema)."""
        if self.args_schema is not None:
            return self.args_schema.model_validate(arguments)
        problems = json_schema_problems(self.input_schema, arguments)
        if problems:
            raise SchemaViolation(problems)
        return arguments


class SchemaViolation(Exception):
    """Arguments that do not match a tool's JSON schema."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


MAX_SCHEMA_ERRORS = 20


def json_schema_problems(schema: Mapping[str, Any] | None, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Where ``arguments`` break ``schema`` (without the rejected values, which may be secrets). A schema
    that is itself unusable checks nothing: the server that published it still validates the call."""
    if not schema:
        return []
    import jsonschema

    validator = _validator(json.dumps(schema, sort_keys=True, default=str))
    if validator is None:
        return []
    try:
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except (jsonschema.exceptions.UnknownType, RecursionError):
        return []
    return [
        {
            "field": ".".join(str(part) for part in error.absolute_path) or "(arguments)",
            "message": _schema_message(error),
        }
        for error in errors[:MAX_SCHEMA_ERRORS]
    ]


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    """The checked validator of a schema (built once per schema: checking a schema costs more than using it),
    or None when the schema is unusable."""
    import jsonschema

    schema = json.loads(schema_json)
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except (jsonschema.SchemaError, RecursionError):
        return None
    return validator_class(schema)


def _schema_message(error: Any) -> str:
    if error.validator == "required":
        return str(error.message).split(" is a required property")[0].strip("'") + " is required"
    if error.validator in ("type", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "format"):
        return f"does not match the schema's {error.validator} ({error.validator_value!r})"[:200]
    if error.validator == "additionalProperties":
        return "unexpected properties"
    return f"does not match the schema ({error.validator})"


class ToolError(Exception):
    """A failure the tool understands; ``invoke`` renders it as an error outcome with this code."""

    def __init__(self, error_code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.details = dict(details or {})


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> ToolSpec:
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} is already registered")
        self._tools[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def names(self) -> set[str]:
        return set(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [self._tools[name] for name in sorted(self._tools)]

    def extended(self, specs: list[ToolSpec]) -> ToolRegistry:
        """A registry with this one's tools plus ``specs`` (a run's tools of MCP servers, say)."""
        registry = ToolRegistry()
        registry._tools = dict(self._tools)
        for spec in specs:
            registry.register(spec)
        return registry

    async def invoke(self, name: str, arguments: Mapping[str, Any] | None, context: ToolContext) -> ToolOutcome:
        """Validate, run under the tool's timeout, and bound and redact the result. Never raises, except
        ``asyncio.CancelledError``, which must reach the run that is being cancelled, and LangGraph's
        control-flow exceptions (``GraphBubbleUp``), which must reach the graph."""
        started = time.perf_counter()
        secrets = secrets_in(context.attributes)
        spec = self._tools.get(name)
        if spec is None:
            output = error_output(TOOL_NOT_FOUND, f"no tool named {name!r} is registered")
            return _finish("error", output, started, context, secrets)

        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            output = error_output(TOOL_INVALID_ARGUMENTS, "tool arguments must be a JSON object", errors=[])
            return _finish("error", output, started, context, secrets)
        try:
            validated = spec.validate(dict(arguments))
        except ValidationError as exc:
            output = error_output(
                TOOL_INVALID_ARGUMENTS,
                f"invalid arguments for {name}: {exc.error_count()} error(s)",
                errors=validation_errors(exc),
            )
            return _finish("error", output, started, context, secrets)
        except SchemaViolation as exc:
            output = error_output(
                TOOL_INVALID_ARGUMENTS, f"invalid arguments for {name}: {len(exc.errors)} error(s)", errors=exc.errors
            )
            return _finish("error", output, started, context, secrets)

        timeout = effective_timeout(spec, context)
        builtin = spec.server is None
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await spec.run(validated, context)
        except TimeoutError as exc:
            if deadline.expired():
                output = error_output(TOOL_TIMEOUT, f"{name} did not finish within {timeout:g} s")
            else:  # the tool's own timeout fired, not ours
                output = error_output(TOOL_FAILED, describe_exception(exc, secrets))
            return _finish("error", output, started, context, secrets, builtin=builtin)
        except ToolError as exc:
            output = error_output(exc.error_code, redact(exc.message, secrets), **exc.details)
            return _finish("error", output, started, context, secrets, builtin=builtin)
        except Exception as exc:
            pass_control_flow(exc)  # an interrupt waiting for a person is not a failure of the tool
            message = describe_exception(exc, secrets)
            logger.warning("tool failed", tool=name, node_id=context.node_id, error=message)
            return _finish("error", error_output(TOOL_FAILED, message), started, context, secrets, builtin=builtin)
        if not isinstance(result, Mapping):
            message = f"{name} returned {type(result).__name__}, expected an object"
            return _finish("error", error_output(TOOL_FAILED, message), started, context, secrets, builtin=builtin)
        return _finish("success", dict(result), started, context, secrets, builtin=builtin)


def _finish(
    status: str,
    output: dict[str, Any],
    started: float,
    context: ToolContext,
    secrets: set[str],
    *,
    builtin: bool = True,
) -> ToolOutcome:
    max_chars = int(context.settings.get(SETTING_OUTPUT_MAX_CHARS) or DEFAULT_OUTPUT_MAX_CHARS)
    try:
        output = redact_value(output, secrets)
        bounded = bound_output(output, max_chars)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. a self-referencing result
        status = "error"
        output = bounded = error_output(TOOL_FAILED, f"the result is not JSON-serialisable ({type(exc).__name__})")
    judgement = outcome_verdict(status, output, builtin=builtin)
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    return ToolOutcome(status, bounded, duration_ms, judgement.verdict, judgement.signals, judgement.observed)


def effective_timeout(spec: ToolSpec, context: ToolContext) -> float:
    """The tool's own timeout, capped by the operator's ``tool_timeout_seconds`` when that is lower."""
    ceiling = context.settings.get(SETTING_TIMEOUT_SECONDS)
    if isinstance(ceiling, int | float) and ceiling > 0:
        return min(spec.timeout_seconds, float(ceiling))
    return spec.timeout_seconds


def error_output(error_code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error_code": error_code, "error_message": message, **details}


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    # Without the input values: a rejected argument may be a secret the model copied from somewhere.
    return [
        {"field": ".".join(str(part) for part in error["loc"]) or "(arguments)", "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def describe_exception(exc: BaseException, secrets: set[str] | None = None) -> str:
    """``Type: message``, one line, bounded, with credentials removed -- never a traceback."""
    text = " ".join(str(exc).split())
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return shorten(redact(message, secrets or set()), MAX_ERROR_MESSAGE_CHARS)


def redact(text: str, secrets: set[str] | frozenset[str] = frozenset()) -> str:
    """Remove URL/DSN passwords, ``password=`` pairs and any known secret literal from ``text``."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['prefix']}:{REDACTED}@", text)
    text = _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}{REDACTED}", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {key: redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item, secrets) for item in value]
    return value


def secrets_in(attributes: Mapping[str, Any]) -> set[str]:
    """Secret literals a node's attributes carry (nested ones too): passwords inside URLs, and values of
    secret-named keys. They are scrubbed from every outcome, whatever form an error message quotes them in.
    """
    found: set[str] = set()
    for key, value in attributes.items():
        if isinstance(value, Mapping):
            found |= secrets_in(value)
            continue
        if not isinstance(value, str):
            continue
        if _SECRET_ATTRIBUTE_NAME.search(str(key)) and len(value) >= _MIN_LITERAL_SECRET_CHARS:
            found.add(value)
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password and len(password) >= _MIN_LITERAL_SECRET_CHARS:
                found.add(password)
    return found


def bound_output(output: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """Plain JSON no longer than ``max_chars``; a longer result becomes its cut-off JSON text, marked so."""
    text = json.dumps(output, default=_json_default, ensure_ascii=False)
    if len(text) <= max_chars:
        plain: dict[str, Any] = json.loads(text)
        return plain
    return {"truncated": True, "original_chars": len(text), "partial_json": text[:max_chars]}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def tool_settings(settings: Settings) -> dict[str, Any]:
    """``ToolContext.settings`` for this process."""
    return {
        SETTING_EGRESS_POLICY: policy_for(settings),
        SETTING_ALLOW_SUPERUSER: settings.superuser_diagnostics_allowed,
        SETTING_PROMETHEUS_URL: settings.prometheus_url,
        SETTING_TIMEOUT_SECONDS: settings.tool_timeout_seconds,
        SETTING_OUTPUT_MAX_CHARS: settings.tool_output_max_chars,
    }
