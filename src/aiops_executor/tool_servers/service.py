"""Tool server rules and storage: create, read, update, delete and refresh MCP servers; their tools for the
catalogue, topology validation and runs.

Conventions of this module:
- ``env`` and ``headers`` are secrets. Each is stored as one encrypted JSON object bound to its row and column
  (``tool_servers.env_encrypted`` / ``headers_encrypted``, re-wrapped by ``keys rotate`` like every
  ``*_encrypted`` column) next to its masked form (``secret_masks``); their plaintext leaves this module only
  in the ``ServerConfig`` a connection is made with.
- stdio servers run a command on the service's machine: only admins register them (every write here is the
  admin's), and production refuses them unless ``AIOPS_ALLOW_STDIO_TOOL_SERVERS=true`` -- at registration and
  again when a run would start one. A ``url`` the egress policy refuses is refused on create and update.
- The tools a server offers are those it listed at its last successful refresh (``POST /refresh``, 502 when the
  server cannot be reached). Create and update never connect: registering a server starts no process and sends
  nothing anywhere until an admin asks for its tools.
- Every write adds its audit entry (resource type ``tool_server``) to the same transaction, then commits; every
  call of a server's tool is audited too (action ``call_tool``, actor ``execution:<id>``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.audit import service as audit
from aiops_executor.core import egress
from aiops_executor.core.context import AppContext
from aiops_executor.core.crypto import DecryptionError, associated_data, mask_secret
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import AppError, ConflictError, NotFoundError, ValidationFailed
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.core.settings import Settings
from aiops_executor.tool_servers.client import ServerConfig, ServerRefused, ServerUnreachable, ToolServerPool
from aiops_executor.tool_servers.models import ToolServer
from aiops_executor.tool_servers.schemas import (
    ToolServerCreate,
    ToolServerRead,
    ToolServerRefresh,
    ToolServerTool,
    ToolServerUpdate,
    Transport,
    transport_problems,
)
from aiops_executor.tool_servers.tools import (
    ToolCallRecord,
    qualified_name,
    server_tool_spec,
    split_tool_name,
    unavailable_tool_spec,
)
from aiops_executor.tools.registry import ToolSpec, redact

logger = structlog.get_logger(__name__)

RESOURCE = "tool_server"
TABLE = "tool_servers"
SECRET_FIELDS = ("env", "headers")
MAX_TOOLS = 500
MAX_ERROR_CHARS = 500
ALLOW_STDIO_SETTING = "AIOPS_ALLOW_STDIO_TOOL_SERVERS"


class ToolServerUnreachable(AppError):
    status_code = 502
    error_code = "TOOL_SERVER_UNREACHABLE"


def name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"a tool server named {name!r} already exists", error_code="TOOL_SERVER_NAME_EXISTS", details={"name": name}
    )


def _field_error(field_name: str, message: str) -> dict[str, Any]:
    return {"loc": ["body", field_name], "message": message, "type": "value_error"}


def _refuse(errors: list[dict[str, Any]]) -> ValidationFailed:
    return ValidationFailed("; ".join(e["message"] for e in errors), details={"errors": errors})


def stdio_refusal(settings: Settings) -> str | None:
    if settings.stdio_tool_servers_allowed:
        return None
    return (
        "stdio tool servers run a command on the service's machine; "
        f"production refuses them unless {ALLOW_STDIO_SETTING}=true"
    )


def _check_policy(settings: Settings, transport: Transport, url: str | None) -> None:
    if transport is Transport.stdio:
        refusal = stdio_refusal(settings)
        if refusal:
            raise _refuse([_field_error("transport", refusal)])
    if url:
        denial = egress.static_url_denial(url, egress.policy_for(settings))
        if denial is not None:
            raise _refuse([_field_error("url", denial.reason)])


# --------------------------------------------------------------------------------------------- secrets


def _encrypt(context: AppContext, column: str, server_id: uuid.UUID, values: dict[str, str]) -> str | None:
    if not values:
        return None
    return context.cipher.encrypt(json.dumps(values, sort_keys=True), associated_data(TABLE, column, server_id))


def _decrypt(context: AppContext, column: str, server_id: uuid.UUID, stored: str | None) -> dict[str, str]:
    if stored is None:
        return {}
    plaintext = context.cipher.decrypt(stored, associated_data(TABLE, column, server_id))
    values = json.loads(plaintext)
    return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}


def _masks(values: dict[str, str]) -> dict[str, str]:
    return {name: mask_secret(value) for name, value in sorted(values.items())}


def _set_secret(context: AppContext, row: ToolServer, name: str, values: dict[str, str]) -> None:
    setattr(row, f"{name}_encrypted", _encrypt(context, f"{name}_encrypted", row.id, values))
    row.secret_masks = {**(row.secret_masks or {}), name: _masks(values)}


def server_config(context: AppContext, row: ToolServer) -> ServerConfig:
    """The connection settings of a stored server, its secrets decrypted. Raises ``DecryptionError``."""
    return ServerConfig(
        id=row.id,
        name=row.name,
        transport=row.transport,
        command=row.command,
        args=tuple(row.args or ()),
        url=row.url,
        env=_decrypt(context, "env_encrypted", row.id, row.env_encrypted),
        headers=_decrypt(context, "headers_encrypted", row.id, row.headers_encrypted),
        approval_required=row.approval_required,
        version=row.updated_at.isoformat() if row.updated_at else "",
    )


# --------------------------------------------------------------------------------------------- reads


def to_read(row: ToolServer) -> ToolServerRead:
    masks = row.secret_masks or {}
    return ToolServerRead(
        id=row.id,
        name=row.name,
        transport=Transport(row.transport),
        command=row.command,
        args=list(row.args or []),
        env=dict(masks.get("env") or {}),
        url=row.url,
        headers=dict(masks.get("headers") or {}),
        approval_required=row.approval_required,
        is_active=row.is_active,
        tools=[ToolServerTool(**t) for t in row.tools or []],
        tools_refreshed_at=row.tools_refreshed_at,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _row(session: AsyncSession, server_id: uuid.UUID) -> ToolServer:
    row = await session.get(ToolServer, server_id)
    if row is None:
        raise NotFoundError(RESOURCE, server_id)
    return row


async def _ensure_name_free(session: AsyncSession, name: str, exclude: uuid.UUID | None = None) -> None:
    stmt = select(ToolServer.id).where(ToolServer.name == name)
    if exclude is not None:
        stmt = stmt.where(ToolServer.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise name_taken(name)


async def get_server(session: AsyncSession, server_id: uuid.UUID) -> ToolServerRead:
    return to_read(await _row(session, server_id))


async def list_servers(
    session: AsyncSession, page: PageParams, *, transport: Transport | None = None, is_active: bool | None = None
) -> Page[ToolServerRead]:
    conditions = []
    if transport is not None:
        conditions.append(ToolServer.transport == transport.value)
    if is_active is not None:
        conditions.append(ToolServer.is_active == is_active)
    rows, total = await paginate(session, select(ToolServer).where(*conditions).order_by(ToolServer.name), page)
    return Page[ToolServerRead].build([to_read(r) for r in rows], total, page)


# --------------------------------------------------------------------------------------------- writes


async def _commit(session: AsyncSession, name: str) -> None:
    from sqlalchemy.exc import IntegrityError

    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise name_taken(name) from None


async def create_server(
    session: AsyncSession, context: AppContext, pool: ToolServerPool, data: ToolServerCreate, *, actor: str
) -> ToolServerRead:
    _check_policy(context.settings, data.transport, data.url)
    await _ensure_name_free(session, data.name)
    row = ToolServer(
        id=uuid.uuid4(),  # the ciphertexts are bound to the id, so it is chosen before encrypting
        name=data.name,
        transport=data.transport.value,
        command=data.command,
        args=list(data.args),
        url=data.url,
        approval_required=data.approval_required,
        is_active=data.is_active,
        tools=[],
        secret_masks={},
    )
    for name in SECRET_FIELDS:
        _set_secret(context, row, name, getattr(data, name))
    session.add(row)
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type=RESOURCE,
        resource_id=row.id,
        details={"name": data.name, "transport": data.transport.value, **_secret_names(data)},
    )
    await _commit(session, data.name)
    return to_read(row)


def _secret_names(data: ToolServerCreate | ToolServerUpdate) -> dict[str, Any]:
    """Which secrets a write set, by name only."""
    names: dict[str, Any] = {}
    for name in SECRET_FIELDS:
        values = getattr(data, name)
        if values is not None:
            names[f"{name}_names"] = sorted(values)
    return names


async def update_server(
    session: AsyncSession,
    context: AppContext,
    pool: ToolServerPool,
    server_id: uuid.UUID,
    data: ToolServerUpdate,
    *,
    actor: str,
) -> ToolServerRead:
    row = await _row(session, server_id)
    given = data.model_fields_set
    transport = data.transport if data.transport is not None else Transport(row.transport)
    url = data.url if "url" in given else row.url
    problems = transport_problems(
        transport,
        command=data.command if "command" in given else row.command,
        args=data.args if data.args is not None else list(row.args or []),
        url=url,
        env=data.env if data.env is not None else _names_only(row, "env"),
        headers=data.headers if data.headers is not None else _names_only(row, "headers"),
    )
    if problems:
        raise _refuse([_field_error("transport", p) for p in problems])
    _check_policy(context.settings, transport, url)
    if data.name is not None and data.name != row.name:
        await _ensure_name_free(session, data.name, exclude=row.id)

    changed: list[str] = []
    plain = {
        "name": data.name,
        "transport": data.transport.value if data.transport is not None else None,
        "args": data.args,
        "approval_required": data.approval_required,
        "is_active": data.is_active,
    }
    for field_name, value in plain.items():
        if value is not None and getattr(row, field_name) != value:
            setattr(row, field_name, value)
            changed.append(field_name)
    for field_name in ("command", "url"):
        if field_name in given and getattr(row, field_name) != getattr(data, field_name):
            setattr(row, field_name, getattr(data, field_name))
            changed.append(field_name)
    for name in SECRET_FIELDS:
        values = getattr(data, name)
        if values is not None:
            _set_secret(context, row, name, values)
            changed.append(name)  # a secret counts as changed whenever it is sent: its value is never compared
    if not changed:
        return to_read(row)
    row.updated_at = utcnow()
    audit.record(
        session,
        actor=actor,
        action="update",
        resource_type=RESOURCE,
        resource_id=row.id,
        details={"changed": sorted(changed), **_secret_names(data)},
    )
    name = row.name
    await _commit(session, name)
    await pool.drop(row.id)  # the next call connects with what was just stored
    return to_read(row)


def _names_only(row: ToolServer, name: str) -> dict[str, str]:
    """The stored secret's variable names (for checking the transport's fields; the values are not needed)."""
    return dict((row.secret_masks or {}).get(name) or {})


async def delete_server(session: AsyncSession, pool: ToolServerPool, server_id: uuid.UUID, *, actor: str) -> None:
    row = await _row(session, server_id)
    audit.record(
        session, actor=actor, action="delete", resource_type=RESOURCE, resource_id=row.id, details={"name": row.name}
    )
    await session.delete(row)
    await session.commit()
    await pool.drop(server_id)


async def refresh_server(
    session: AsyncSession, context: AppContext, pool: ToolServerPool, server_id: uuid.UUID, *, actor: str
) -> ToolServerRefresh:
    row = await _row(session, server_id)
    _check_policy(context.settings, Transport(row.transport), None)
    tools = await _discover(session, context, pool, row, actor=actor)
    return ToolServerRefresh(tools=tools)


async def _discover(
    session: AsyncSession,
    context: AppContext,
    pool: ToolServerPool,
    row: ToolServer,
    *,
    actor: str,
) -> list[ToolServerTool]:
    """Connects to the server (a connection of its own, closed after), lists its tools and stores them.
    A failure is stored as ``last_error`` and answers 502 ``TOOL_SERVER_UNREACHABLE``."""
    if session.in_transaction():
        # Not held open while a server starts or answers: on SQLite a transaction holds the write lock.
        await session.commit()
    try:
        config = server_config(context, row)
    except DecryptionError:
        message = "its env or headers cannot be decrypted with the current master keys; re-enter them"
        await _discovery_failed(session, row, message, actor=actor)
    if config.transport == Transport.stdio.value and stdio_refusal(context.settings):
        await _discovery_failed(session, row, stdio_refusal(context.settings) or "", actor=actor)
    try:
        connection = await pool.open_once(config)
        try:
            listed = await connection.list_tools()
        finally:
            await connection.close()
    except (ServerUnreachable, ServerRefused) as exc:
        await _discovery_failed(session, row, redact(exc.message, config.secrets), actor=actor)
    tools = [
        ToolServerTool(name=t.name, description=t.description or "", input_schema=dict(t.inputSchema or {}))
        for t in listed[:MAX_TOOLS]
    ]
    row.tools = [t.model_dump() for t in tools]
    row.tools_refreshed_at = utcnow()
    row.last_error = None
    audit.record(
        session,
        actor=actor,
        action="refresh",
        resource_type=RESOURCE,
        resource_id=row.id,
        details={"tools": [t.name for t in tools]},
    )
    await session.commit()
    await pool.drop(row.id)  # runs reconnect with what was just checked
    return tools


async def _discovery_failed(session: AsyncSession, row: ToolServer, message: str, *, actor: str) -> NoReturn:
    message = message[:MAX_ERROR_CHARS]
    row.last_error = message
    audit.record(
        session, actor=actor, action="refresh", resource_type=RESOURCE, resource_id=row.id, details={"error": message}
    )
    await session.commit()
    logger.warning("could not list the tools of a tool server", server=row.name, error=message)
    raise ToolServerUnreachable(
        f"tool server {row.name!r} could not be reached: {message}", details={"id": str(row.id), "name": row.name}
    )


# --------------------------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class CatalogTool:
    name: str  # <server_name>.<tool_name>
    description: str
    input_schema: dict[str, Any]
    server: str
    approval_required: bool


async def catalog(session: AsyncSession) -> list[CatalogTool]:
    """The tools of every active server, as their last refresh listed them."""
    rows = await session.scalars(select(ToolServer).where(ToolServer.is_active.is_(True)).order_by(ToolServer.name))
    return [
        CatalogTool(
            name=qualified_name(row.name, str(tool["name"])),
            description=str(tool.get("description") or ""),
            input_schema=dict(tool.get("input_schema") or {}),
            server=row.name,
            approval_required=row.approval_required,
        )
        for row in rows
        for tool in row.tools or []
    ]


async def catalog_names(session: AsyncSession) -> set[str]:
    return {tool.name for tool in await catalog(session)}


async def run_tool_specs(
    sessionmaker: async_sessionmaker[AsyncSession],
    context: AppContext,
    pool: ToolServerPool,
    names: Iterable[str],
) -> list[ToolSpec]:
    """The registry entries for the servers' tools among ``names`` (a run's agents' tools), built from the
    stored servers. A tool whose server is switched off, gone, refused here or undecryptable is still an
    entry, whose every call is a tool error saying why."""
    wanted: dict[str, set[str]] = {}
    for name in names:
        parts = split_tool_name(name)
        if parts is not None:
            wanted.setdefault(parts[0], set()).add(parts[1])
    if not wanted:
        return []
    async with sessionmaker() as session:
        rows = {r.name: r for r in await session.scalars(select(ToolServer).where(ToolServer.name.in_(wanted)))}
    timeout = context.settings.tool_timeout_seconds
    auditor = _auditor(sessionmaker)
    specs: list[ToolSpec] = []
    for server_name, tool_names in sorted(wanted.items()):
        row = rows.get(server_name)
        reason = _unavailable_reason(context, row, server_name)
        config: ServerConfig | None = None
        if reason is None and row is not None:
            try:
                config = server_config(context, row)
            except DecryptionError:
                reason = f"the secrets of tool server {server_name!r} cannot be decrypted with the current master keys"
        listed = {str(t["name"]): t for t in (row.tools if row is not None else None) or []}
        for tool_name in sorted(tool_names):
            name = qualified_name(server_name, tool_name)
            if config is None:
                specs.append(unavailable_tool_spec(name, reason or "", server=server_name, timeout_seconds=timeout))
                continue
            # A tool the last refresh did not list still goes to the server, which knows best what it has now.
            tool = listed.get(tool_name) or {"name": tool_name, "description": "", "input_schema": {}}
            specs.append(server_tool_spec(config, tool, pool, auditor, timeout_seconds=timeout))
    return specs


def _unavailable_reason(context: AppContext, row: ToolServer | None, server_name: str) -> str | None:
    if row is None:
        return f"no tool server named {server_name!r} is registered"
    if not row.is_active:
        return f"tool server {server_name!r} is switched off"
    if row.transport == Transport.stdio.value:
        return stdio_refusal(context.settings)
    return None


def _auditor(sessionmaker: async_sessionmaker[AsyncSession]) -> Any:
    async def record_call(call: ToolCallRecord) -> None:
        async with sessionmaker() as session:
            audit.record(
                session,
                actor=f"execution:{call.execution_id}" if call.execution_id else "engine",
                action="call_tool",
                resource_type=RESOURCE,
                resource_id=call.server_id,
                details={
                    "server": call.server,
                    "tool": call.tool,
                    "arguments": call.arguments,
                    "execution_id": call.execution_id or None,
                    "node_id": call.node_id or None,
                    "agent_id": call.agent_id or None,
                    "status": call.status,
                    "error_code": call.error_code,
                    "duration_ms": call.duration_ms,
                },
            )
            await session.commit()

    return record_call
