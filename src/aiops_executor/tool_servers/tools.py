"""The tools of MCP servers as ``ToolSpec`` entries of a run's registry (``<server_name>.<tool_name>``).

They go through ``ToolRegistry.invoke`` like the built-in tools: arguments checked against the schema the
server published, the process's tool timeout, the output limit and redaction. On top of that each call is
audited (server, tool, arguments with secrets redacted, run, outcome), and what the server says is scrubbed
of the server's own secrets (its env and header values). A server that is down, switched off or gone makes
its tools' calls fail as tool errors: the agent reads why and the run goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from aiops_executor.tool_servers.client import ServerConfig, ServerRefused, ServerUnreachable, ToolServerPool
from aiops_executor.tools.registry import (
    TOOL_FAILED,
    ToolContext,
    ToolError,
    ToolSpec,
    redact,
    redact_value,
    secrets_in,
)

if TYPE_CHECKING:  # the MCP SDK is loaded on first use (tool_servers/client.py)
    from mcp.types import CallToolResult

logger = structlog.get_logger(__name__)

TOOL_SERVER_UNREACHABLE = "TOOL_SERVER_UNREACHABLE"
TOOL_SERVER_UNAVAILABLE = "TOOL_SERVER_UNAVAILABLE"
SEPARATOR = "."
MAX_DESCRIPTION_CHARS = 2000


def split_tool_name(name: str) -> tuple[str, str] | None:
    """``(server_name, tool_name)`` of a server's tool name, None for a built-in tool's."""
    server, dot, tool = name.partition(SEPARATOR)
    return (server, tool) if dot and server and tool else None


def qualified_name(server_name: str, tool_name: str) -> str:
    return f"{server_name}{SEPARATOR}{tool_name}"


@dataclass(frozen=True)
class ToolCallRecord:
    """One audited call of a server's tool."""

    server_id: str
    server: str
    tool: str
    arguments: dict[str, Any]
    execution_id: str
    node_id: str
    agent_id: str
    status: str
    duration_ms: float
    error_code: str | None = None


Auditor = Callable[[ToolCallRecord], Awaitable[None]]


def redact_arguments(arguments: Mapping[str, Any], secrets: set[str]) -> dict[str, Any]:
    """Arguments fit for the audit log and events: known secret values scrubbed, secret-named keys masked."""
    scrubbed = redact_value(dict(arguments), secrets)
    result = redact_value(scrubbed, secrets_in(scrubbed))
    return result if isinstance(result, dict) else {}


def result_output(result: CallToolResult) -> dict[str, Any]:
    """What the agent reads of a call's result: the text of every block (binary blocks by type and size) and
    the structured content when the server sent some."""
    from mcp.types import EmbeddedResource, ImageContent, TextContent  # loaded by the session already

    texts: list[str] = []
    blocks: list[dict[str, Any]] = []
    for block in result.content:
        if isinstance(block, TextContent):
            texts.append(block.text)
        elif isinstance(block, ImageContent):
            blocks.append({"type": "image", "mime_type": block.mimeType, "bytes_base64": len(block.data)})
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            text = getattr(resource, "text", None)
            blocks.append({"type": "resource", "uri": str(resource.uri), **({"text": text} if text else {})})
        else:
            blocks.append({"type": getattr(block, "type", "unknown")})
    output: dict[str, Any] = {"text": "\n".join(texts)}
    if blocks:
        output["content"] = blocks
    if result.structuredContent is not None:
        output["structured_content"] = result.structuredContent
    return output


def server_tool_spec(
    config: ServerConfig,
    tool: Mapping[str, Any],
    pool: ToolServerPool,
    auditor: Auditor,
    *,
    timeout_seconds: float,
) -> ToolSpec:
    """The registry entry of one tool of a reachable (registered, active) server."""
    tool_name = str(tool["name"])
    name = qualified_name(config.name, tool_name)
    secrets = config.secrets

    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        started = time.perf_counter()
        status: str = "error"
        error_code: str | None = TOOL_FAILED
        try:
            try:
                result = await pool.call(config, tool_name, dict(arguments), timeout_seconds)
            except ServerUnreachable as exc:
                error_code = TOOL_SERVER_UNREACHABLE
                message = f"tool server {config.name!r} is unreachable: {redact(exc.message, secrets)}"
                raise ToolError(TOOL_SERVER_UNREACHABLE, message) from None
            except ServerRefused as exc:
                raise ToolError(TOOL_FAILED, f"{name}: {redact(exc.message, secrets)}") from None
            output = redact_value(result_output(result), secrets)
            if result.isError:
                raise ToolError(TOOL_FAILED, f"{name} failed: {output.get('text') or 'the server reported an error'}")
            status, error_code = "success", None
            return dict(output)
        except (TimeoutError, asyncio.CancelledError):
            error_code = "TOOL_TIMEOUT"
            raise
        finally:
            record = ToolCallRecord(
                server_id=str(config.id),
                server=config.name,
                tool=tool_name,
                arguments=redact_arguments(arguments, secrets | secrets_in(context.attributes)),
                execution_id=context.execution_id,
                node_id=context.node_id,
                agent_id=context.agent_id,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                error_code=error_code,
            )
            # Shielded: a call cut off by its timeout (or a cancelled run) is audited all the same.
            await asyncio.shield(_audit(auditor, record))

    description = str(tool.get("description") or f"Tool {tool_name} of MCP server {config.name}")
    return ToolSpec(
        name=name,
        description=description[:MAX_DESCRIPTION_CHARS],
        args_schema=None,
        run=run,
        timeout_seconds=timeout_seconds,
        input_schema=dict(tool.get("input_schema") or {"type": "object", "properties": {}}),
        server=config.name,
        approval_required=config.approval_required,
    )


def unavailable_tool_spec(name: str, reason: str, *, server: str, timeout_seconds: float) -> ToolSpec:
    """A tool whose server cannot serve this run (switched off, deleted, its secrets unreadable): every call is
    a tool error saying why, so the agent carries on without it."""

    async def run(arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        raise ToolError(TOOL_SERVER_UNAVAILABLE, f"{name} cannot be used: {reason}")

    return ToolSpec(
        name=name,
        description=f"Unavailable: {reason}",
        args_schema=None,
        run=run,
        timeout_seconds=timeout_seconds,
        input_schema={"type": "object"},
        server=server,
    )


async def _audit(auditor: Auditor, record: ToolCallRecord) -> None:
    try:
        await auditor(record)
    except Exception as exc:
        logger.error("could not audit a tool server call", server=record.server, tool=record.tool, error=str(exc))
