from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import StringConstraints

from aiops_executor.audit import service
from aiops_executor.audit.schemas import AuditLogRead
from aiops_executor.auth.dependencies import AdminDep
from aiops_executor.core.deps import PageQuery, SessionDep
from aiops_executor.core.json_types import QueryDatetime
from aiops_executor.core.pagination import Page
from aiops_executor.core.text import NAME_TEXT

# A filter is compared with stored names and ids: what no stored value can contain (a NUL, which PostgreSQL
# cannot even receive in text) is a 422, the same on every database.
Filter = Annotated[str, StringConstraints(max_length=200), NAME_TEXT]

router = APIRouter(tags=["audit"])


@router.get(
    "/audit-logs",
    response_model=Page[AuditLogRead],
    operation_id="listAuditLogs",
    summary="List audit log entries",
    description="Who changed what and when (every write through the API), newest first, a page at a time; filter "
    "by `resource_type`, `resource_id`, `action`, `actor` and a time range (`created_after`, `created_before`).",
)
async def list_audit_logs(
    _: AdminDep,
    session: SessionDep,
    page: PageQuery,
    resource_type: Annotated[Filter | None, Query()] = None,
    resource_id: Annotated[Filter | None, Query()] = None,
    action: Annotated[Filter | None, Query()] = None,
    actor: Annotated[Filter | None, Query()] = None,
    created_after: Annotated[QueryDatetime | None, Query(description="at or after this time")] = None,
    created_before: Annotated[QueryDatetime | None, Query(description="before this time")] = None,
) -> Page[AuditLogRead]:
    rows, total = await service.list_entries(
        session,
        page,
        resource_type=resource_type,
        resource_id=resource_id,
        action=action,
        actor=actor,
        created_after=created_after,
        created_before=created_before,
    )
    return Page[AuditLogRead].build([AuditLogRead.model_validate(r) for r in rows], total, page)
