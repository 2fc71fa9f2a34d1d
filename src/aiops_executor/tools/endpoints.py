"""HTTP route of the tool catalogue: any authenticated caller may read it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from aiops_executor.auth.dependencies import ViewerDep
from aiops_executor.core.deps import ContextDep, PageQuery, SessionDep
from aiops_executor.core.pagination import Page
from aiops_executor.tool_servers import service as tool_servers
from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import ToolRegistry
from aiops_executor.tools.schemas import ToolRead

router = APIRouter(tags=["tools"])


def get_tool_registry() -> ToolRegistry:
    return default_registry()


RegistryDep = Annotated[ToolRegistry, Depends(get_tool_registry)]


@router.get(
    "/tools",
    response_model=Page[ToolRead],
    operation_id="listTools",
    summary="List the diagnostic tools",
    description="The tools agents can be given (name, description, JSON Schema of the arguments), a page at a "
    "time: the built-in ones (all read-only) and those of the active MCP tool servers (`<server>.<tool>`).",
)
async def list_tools(
    _: ViewerDep, registry: RegistryDep, session: SessionDep, context: ContextDep, page: PageQuery
) -> Page[ToolRead]:
    timeout = context.settings.tool_timeout_seconds
    tools = [ToolRead.from_spec(spec) for spec in registry.specs()]
    tools += [
        ToolRead(
            name=tool.name,
            description=tool.description,
            args_schema=tool.input_schema or {"type": "object", "properties": {}},
            timeout_seconds=timeout,
            server=tool.server,
            approval_required=tool.approval_required,
        )
        for tool in await tool_servers.catalog(session)
    ]
    tools.sort(key=lambda tool: tool.name)
    window = tools[page.offset : page.offset + page.size]
    return Page[ToolRead].build(window, len(tools), page)
