"""HTTP routes of the MCP tool servers: any authenticated caller reads them, only admins write or refresh them
(a stdio server runs a command on the service's machine)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http_status

from aiops_executor.auth.dependencies import AdminDep, ViewerDep
from aiops_executor.core.deps import PageQuery, SessionDep
from aiops_executor.core.openapi import errors
from aiops_executor.core.pagination import Page
from aiops_executor.services import ServiceContextDep
from aiops_executor.tool_servers import service
from aiops_executor.tool_servers.schemas import (
    ToolServerCreate,
    ToolServerRead,
    ToolServerRefresh,
    ToolServerUpdate,
    Transport,
)

router = APIRouter(tags=["tool-servers"])

SECRETS_NOTE = "`env` and `headers` values are secrets: stored encrypted and returned masked."


@router.post(
    "/tool-servers",
    response_model=ToolServerRead,
    status_code=http_status.HTTP_201_CREATED,
    operation_id="createToolServer",
    summary="Register an MCP tool server",
    description=(
        "Registers an MCP server (stdio: a command this service starts; streamable_http: a URL) whose tools agents "
        f"may use as `<name>.<tool_name>`. {SECRETS_NOTE} Registering connects to nothing: `POST "
        "/tool-servers/{id}/refresh` starts or connects to the server and lists its tools. Refused with 422: fields "
        "that do not fit the transport, a stdio server in production without `AIOPS_ALLOW_STDIO_TOOL_SERVERS=true`, "
        "a url the egress policy refuses."
    ),
    responses=errors({409: {"TOOL_SERVER_NAME_EXISTS": "another tool server has this name"}}),
)
async def create_tool_server(
    data: ToolServerCreate, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ToolServerRead:
    return await service.create_server(session, context, context.tool_servers, data, actor=principal.actor)


@router.get(
    "/tool-servers",
    response_model=Page[ToolServerRead],
    operation_id="listToolServers",
    summary="List the MCP tool servers",
    description=f"Every registered tool server, by name. {SECRETS_NOTE}",
)
async def list_tool_servers(
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    transport: Annotated[Transport | None, Query(description="only servers of this transport")] = None,
    is_active: Annotated[bool | None, Query()] = None,
) -> Page[ToolServerRead]:
    return await service.list_servers(session, page, transport=transport, is_active=is_active)


@router.get(
    "/tool-servers/{server_id}",
    response_model=ToolServerRead,
    operation_id="getToolServer",
    summary="Read an MCP tool server",
    description=f"One tool server with the tools it listed at its last refresh. {SECRETS_NOTE}",
    responses=errors({404: {"TOOL_SERVER_NOT_FOUND": "no such tool server"}}),
)
async def get_tool_server(server_id: uuid.UUID, _: ViewerDep, session: SessionDep) -> ToolServerRead:
    return await service.get_server(session, server_id)


@router.put(
    "/tool-servers/{server_id}",
    response_model=ToolServerRead,
    operation_id="updateToolServer",
    summary="Change an MCP tool server",
    description=(
        "Partial update: omitted fields keep their value; `env` or `headers`, when sent, replace the stored object "
        "whole (`{}` removes them). Connections to the server are re-established with the new settings on their "
        "next use; refresh to list its tools again."
    ),
    responses=errors(
        {
            404: {"TOOL_SERVER_NOT_FOUND": "no such tool server"},
            409: {"TOOL_SERVER_NAME_EXISTS": "another tool server has this name"},
        }
    ),
)
async def update_tool_server(
    server_id: uuid.UUID, data: ToolServerUpdate, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ToolServerRead:
    return await service.update_server(session, context, context.tool_servers, server_id, data, actor=principal.actor)


@router.delete(
    "/tool-servers/{server_id}",
    status_code=http_status.HTTP_204_NO_CONTENT,
    operation_id="deleteToolServer",
    summary="Delete an MCP tool server",
    description=(
        "Removes the server and closes this process's connection to it. Teams naming its tools keep them, and "
        "their calls fail as tool errors (`POST /teams/{id}/validate` reports them)."
    ),
    responses=errors({404: {"TOOL_SERVER_NOT_FOUND": "no such tool server"}}),
)
async def delete_tool_server(
    server_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> Response:
    await service.delete_server(session, context.tool_servers, server_id, actor=principal.actor)
    return Response(status_code=http_status.HTTP_204_NO_CONTENT)


@router.post(
    "/tool-servers/{server_id}/refresh",
    response_model=ToolServerRefresh,
    operation_id="refreshToolServer",
    summary="Connect to an MCP tool server and list its tools",
    description=(
        "Connects to the server (starting it, for stdio), lists its tools and stores them: they are what `GET "
        "/tools` and topology validation know of the server. When the server cannot be started, reached or asked, "
        "502 `TOOL_SERVER_UNREACHABLE` gives the reason (also kept as the server's `last_error`); a stdio server in "
        "production without `AIOPS_ALLOW_STDIO_TOOL_SERVERS=true` is refused with 422."
    ),
    responses=errors(
        {
            404: {"TOOL_SERVER_NOT_FOUND": "no such tool server"},
            502: {"TOOL_SERVER_UNREACHABLE": "the server could not be started, reached or asked"},
        }
    ),
)
async def refresh_tool_server(
    server_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ToolServerRefresh:
    return await service.refresh_server(session, context, context.tool_servers, server_id, actor=principal.actor)
