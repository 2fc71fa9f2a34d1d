"""The list envelope shared by every collection route, and one page of a query (no web framework here: services
page their queries too; the query parameters are ``core.deps.PageQuery``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
# Far beyond any real listing; keeps the offset within a 64-bit SQL integer (a larger page would overflow it).
MAX_PAGE = 1_000_000


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    size: int
    pages: int

    @classmethod
    def build(cls, items: list[T], total: int, params: PageParams) -> Page[T]:
        return cls(
            items=items,
            total=total,
            page=params.page,
            size=params.size,
            pages=math.ceil(total / params.size) if total else 0,
        )


@dataclass(frozen=True)
class PageParams:
    page: int = 1
    size: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


async def paginate(session: AsyncSession, stmt: Select[T], page: PageParams) -> tuple[list[T], int]:
    """One page of ``stmt``'s rows (in its order) and how many rows it has in all."""
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = await session.scalars(stmt.offset(page.offset).limit(page.size))
    return list(rows), total
