"""HTTP route of the tool catalogue: any authenticated caller may read it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from aiops_executor.auth.dependencies import ViewerDep
from aiops_executor.core.pagination import Page, PageQuery
from aiops_executor.tools.registry import ToolRegistry, default_registry
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
    "time. Every built-in tool is read-only.",
)
async def list_tools(_: ViewerDep, registry: RegistryDep, page: PageQuery) -> Page[ToolRead]:
    specs = registry.specs()
    window = specs[page.offset : page.offset + page.size]
    return Page[ToolRead].build([ToolRead.from_spec(spec) for spec in window], len(specs), page)
