"""FastAPI dependencies shared by every domain router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.context import AppContext
from aiops_executor.core.pagination import MAX_PAGE, PageParams


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_session(context: ContextDep) -> AsyncIterator[AsyncSession]:
    async for session in context.database.session():
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _page_params(
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page number")] = 1,
    size: Annotated[int, Query(ge=1, le=100, description="items per page")] = 20,
) -> PageParams:
    return PageParams(page=page, size=size)


PageQuery = Annotated[PageParams, Depends(_page_params)]
