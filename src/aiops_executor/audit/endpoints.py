from __future__ import annotations

from fastapi import APIRouter

from aiops_executor.audit import service
from aiops_executor.audit.schemas import AuditLogRead
from aiops_executor.auth.dependencies import AdminDep
from aiops_executor.core.deps import SessionDep
from aiops_executor.core.pagination import Page, PageQuery

router = APIRouter(tags=["audit"])


@router.get(
    "/audit-logs",
    response_model=Page[AuditLogRead],
    operation_id="listAuditLogs",
    summary="List audit log entries",
    description="Who changed what and when (every write through the API), newest first, a page at a time; filter "
    "by `resource_type`, `resource_id`, `action` or `actor`.",
)
async def list_audit_logs(
    _: AdminDep,
    session: SessionDep,
    page: PageQuery,
    resource_type: str | None = None,
    resource_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> Page[AuditLogRead]:
    rows, total = await service.list_entries(
        session,
        offset=page.offset,
        limit=page.size,
        resource_type=resource_type,
        resource_id=resource_id,
        action=action,
        actor=actor,
    )
    return Page[AuditLogRead].build([AuditLogRead.model_validate(r) for r in rows], total, page)
