"""ToolRegistry.invoke: validation, timeouts, failures, redaction, bounded output, cancellation."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from aiops_executor.core.egress import policy_for
from aiops_executor.core.settings import Environment, Settings
from aiops_executor.llm.simulator import tool_arguments
from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import (
    DEFAULT_OUTPUT_MAX_CHARS,
    SETTING_OUTPUT_MAX_CHARS,
    SETTING_TIMEOUT_SECONDS,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolSpec,
    redact,
    tool_settings,
)

BUILTIN_NAMES = {
    "http_check",
    "tcp_check",
    "dns_lookup",
    "tls_certificate",
    "prometheus_query",
    "postgres_diagnostics",
    "mysql_diagnostics",
    "redis_info",
}


class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20)
    repeat: int = Field(default=1, ge=1, le=100_000)


class NoArgs(BaseModel):
    pass


async def _echo(args: EchoArgs, context: ToolContext) -> dict[str, Any]:
    return {"text": args.text * args.repeat, "node_id": context.node_id, "at": datetime(2026, 1, 1, tzinfo=UTC)}


class SlowTool:
    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def run(self, args: NoArgs, context: ToolContext) -> dict[str, Any]:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return {}


async def _leaky_failure(args: NoArgs, context: ToolContext) -> dict[str, Any]:
    raise RuntimeError(
        "could not connect to postgresql://app:hunter2-pw@db.internal:5432/orders "
        "(libpq: host=db.internal password=kw-secret-1 dbname=orders); server said: bad login for s3cr3t-token-value"
    )


async def _own_timeout(args: NoArgs, context: ToolContext) -> dict[str, Any]:
    raise TimeoutError("upstream read timed out")


async def _known_failure(args: NoArgs, context: ToolContext) -> dict[str, Any]:
    raise ToolError("SOMETHING_SPECIFIC", "the thing is missing", {"hint": "add it"})


async def _not_a_dict(args: NoArgs, context: ToolContext) -> Any:
    return ["not", "a", "dict"]


@pytest.fixture
def slow() -> SlowTool:
    return SlowTool()


@pytest.fixture
def registry(slow: SlowTool) -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(ToolSpec("echo", "Echo text.", EchoArgs, _echo, timeout_seconds=5))
    registry.register(ToolSpec("slow", "Sleeps.", NoArgs, slow.run, timeout_seconds=0.1))
    registry.register(ToolSpec("slow_patient", "Sleeps, long timeout.", NoArgs, slow.run, timeout_seconds=60))
    registry.register(ToolSpec("leaky", "Fails with credentials in the message.", NoArgs, _leaky_failure))
    registry.register(ToolSpec("own_timeout", "Raises its own TimeoutError.", NoArgs, _own_timeout))
    registry.register(ToolSpec("known", "Raises a ToolError.", NoArgs, _known_failure))
    registry.register(ToolSpec("not_a_dict", "Returns a list.", NoArgs, _not_a_dict))
    return registry


async def test_success_is_plain_json_with_duration(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", {"text": "hi", "repeat": 2}, ToolContext(node_id="n1"))
    assert outcome.status == "success" and outcome.ok
    assert outcome.output == {"text": "hihi", "node_id": "n1", "at": "2026-01-01T00:00:00+00:00"}
    assert outcome.duration_ms >= 0


async def test_unknown_tool(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("nope", {}, ToolContext())
    assert outcome.status == "error"
    assert outcome.output["error_code"] == "TOOL_NOT_FOUND"
    assert "nope" in outcome.output["error_message"]


async def test_invalid_arguments_list_every_field_without_echoing_values(registry: ToolRegistry) -> None:
    outcome = await registry.invoke(
        "echo", {"text": "a-secret-value-that-is-too-long", "repeat": 0, "extra": 1}, ToolContext()
    )
    assert outcome.status == "error"
    assert outcome.output["error_code"] == "TOOL_INVALID_ARGUMENTS"
    assert {error["field"] for error in outcome.output["errors"]} == {"text", "repeat", "extra"}
    assert "a-secret-value" not in json.dumps(outcome.output)


async def test_arguments_that_are_not_an_object(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", "text=hi", ToolContext())  # type: ignore[arg-type]
    assert outcome.output["error_code"] == "TOOL_INVALID_ARGUMENTS"


async def test_timeout(registry: ToolRegistry, slow: SlowTool) -> None:
    outcome = await registry.invoke("slow", {}, ToolContext())
    assert outcome.status == "error"
    assert outcome.output["error_code"] == "TOOL_TIMEOUT"
    assert slow.cancelled
    assert outcome.duration_ms < 2000


async def test_operator_ceiling_caps_the_tool_timeout(registry: ToolRegistry) -> None:
    context = ToolContext(settings={SETTING_TIMEOUT_SECONDS: 0.05})
    outcome = await registry.invoke("slow_patient", {}, context)
    assert outcome.output["error_code"] == "TOOL_TIMEOUT"
    assert "0.05" in outcome.output["error_message"]


async def test_a_tools_own_timeout_error_is_a_failure_not_our_timeout(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("own_timeout", {}, ToolContext())
    assert outcome.output == {"error_code": "TOOL_FAILED", "error_message": "TimeoutError: upstream read timed out"}


async def test_exception_becomes_short_redacted_message(registry: ToolRegistry) -> None:
    context = ToolContext(
        attributes={
            "postgres_dsn": "postgresql://app:hunter2-pw@db.internal/orders",
            "auth": {"api_token": "s3cr3t-token-value"},
        }
    )
    outcome = await registry.invoke("leaky", {}, context)
    assert outcome.status == "error"
    assert outcome.output["error_code"] == "TOOL_FAILED"
    message = outcome.output["error_message"]
    assert message.startswith("RuntimeError: could not connect to postgresql://app:***@db.internal:5432/orders")
    assert "password=***" in message
    for secret in ("hunter2-pw", "kw-secret-1", "s3cr3t-token-value", "Traceback"):
        assert secret not in message


async def test_tool_error_keeps_its_code_and_details(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("known", {}, ToolContext())
    assert outcome.output == {
        "error_code": "SOMETHING_SPECIFIC",
        "error_message": "the thing is missing",
        "hint": "add it",
    }


async def test_non_object_result_is_a_failure(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("not_a_dict", {}, ToolContext())
    assert outcome.output["error_code"] == "TOOL_FAILED"


async def test_unserialisable_result_is_a_failure() -> None:
    async def circular(args: NoArgs, context: ToolContext) -> dict[str, Any]:
        result: dict[str, Any] = {}
        result["self"] = result
        return result

    registry = ToolRegistry()
    registry.register(ToolSpec("circular", "Returns a cycle.", NoArgs, circular))
    outcome = await registry.invoke("circular", None, ToolContext())
    assert outcome.status == "error"
    assert outcome.output["error_code"] == "TOOL_FAILED"


async def test_large_output_is_truncated_to_the_bound(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", {"text": "0123456789", "repeat": 2_000}, ToolContext())
    assert outcome.status == "success"
    assert outcome.output["truncated"] is True
    assert outcome.output["original_chars"] > 20_000
    assert len(outcome.output["partial_json"]) == DEFAULT_OUTPUT_MAX_CHARS
    assert outcome.output["partial_json"].startswith('{"text": "0123456789')

    small = await registry.invoke(
        "echo", {"text": "0123456789", "repeat": 200}, ToolContext(settings={SETTING_OUTPUT_MAX_CHARS: 1000})
    )
    assert small.output["truncated"] is True
    assert len(json.dumps(small.output)) < 1200


async def test_output_under_the_bound_is_untouched(registry: ToolRegistry) -> None:
    outcome = await registry.invoke("echo", {"text": "x", "repeat": 100}, ToolContext())
    assert "truncated" not in outcome.output
    assert outcome.output["text"] == "x" * 100


async def test_cancellation_propagates_and_reaches_the_tool(registry: ToolRegistry, slow: SlowTool) -> None:
    task = asyncio.create_task(registry.invoke("slow_patient", {}, ToolContext()))
    await asyncio.wait_for(slow.started.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.cancelled


def test_redact_forms() -> None:
    assert redact("redis://:pw-1@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact("see https://u:p@h/x and https://h/a:b@c") == "see https://u:***@h/x and https://h/a:b@c"
    assert redact("host=h password='two words' user=u") == "host=h password=*** user=u"
    assert redact("https://example.com/path?x=1") == "https://example.com/path?x=1"
    assert redact("https://medium.com:443/@someone") == "https://medium.com:443/@someone"
    assert redact("token abcd1234 seen", {"abcd1234"}) == "token *** seen"


def test_register_refuses_duplicates(registry: ToolRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(ToolSpec("echo", "again", EchoArgs, _echo))


def test_default_registry_holds_every_builtin_once() -> None:
    registry = default_registry()
    assert registry is default_registry()
    assert registry.names() == BUILTIN_NAMES
    for spec in registry.specs():
        assert spec.description and "\n" not in spec.description
        schema = spec.json_schema()
        assert schema["type"] == "object"
        assert not schema.get("required"), f"{spec.name}: every argument must be optional (attributes fill them)"
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{spec.name}.{name} has no description"
        assert spec.attribute_keys, spec.name


def test_simulator_fills_arguments_from_attributes_by_name() -> None:
    """The offline model passes node attributes whose key equals an argument name; they must validate."""
    attributes = {
        "url": "http://127.0.0.1:8080/health",
        "host": "127.0.0.1",
        "port": 8080,
        "hostname": "localhost",
        "prometheus_url": "http://127.0.0.1:9090",
        "postgres_dsn": "postgresql://u:pw@127.0.0.1/db",
        "redis_url": "redis://127.0.0.1:6379/0",
        "expected_status": 200,
    }
    expected = {
        "http_check": {"url", "expected_status"},
        "tcp_check": {"host", "port"},
        "dns_lookup": {"hostname"},
        "tls_certificate": {"host", "port"},
        "prometheus_query": {"prometheus_url"},
        "postgres_diagnostics": set(),  # a DSN may hold a password: never an argument
        "mysql_diagnostics": set(),
        "redis_info": set(),
    }
    for spec in default_registry().specs():
        arguments = tool_arguments(spec.json_schema(), attributes)
        assert set(arguments) == expected[spec.name], spec.name
        spec.args_schema.model_validate(arguments)


def test_tool_settings_from_service_settings(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        prometheus_url="http://prom:9090",
        tool_timeout_seconds=12,
        tool_output_max_chars=4000,
    )
    built = tool_settings(settings)
    assert {k: built[k] for k in ("prometheus_url", "timeout_seconds", "output_max_chars")} == {
        "prometheus_url": "http://prom:9090",
        "timeout_seconds": 12.0,
        "output_max_chars": 4000,
    }
    assert built["egress_policy"] == policy_for(settings)
    assert built["diagnostics_allow_superuser"] is True  # dev; prod refuses unless allowed
    prod = tool_settings(settings.model_copy(update={"env": Environment.prod}))
    assert prod["diagnostics_allow_superuser"] is False
    defaults = tool_settings(Settings(_env_file=None, data_dir=tmp_path))
    assert defaults["prometheus_url"] is None
    assert defaults["output_max_chars"] == DEFAULT_OUTPUT_MAX_CHARS
