"""Providers: the vendors and servers users register (name, type, active), soft-deleted."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.changes import apply_changes, flush_or_conflict
from aiops_executor.core.context import AppContext
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import ConflictError, NotFoundError
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.catalog import InUse
from aiops_executor.llm.models import Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.llm.schemas import (
    ProviderCreate,
    ProviderRead,
    ProviderUpdate,
)
from aiops_executor.llm.service.common import (
    ENDPOINT_RULE_FIELDS,
    cached,
    check_endpoint_rules,
    columns_of,
    commit_and_invalidate,
    field_error,
    validation_failed,
)


async def _ensure_provider_unused(session: AsyncSession, provider: Provider, in_use: InUse) -> None:
    teams = await in_use(session, provider_id=provider.id)
    reasons = [f"team {team['name']!r} uses it" for team in teams]
    if reasons:
        raise ConflictError(
            f"provider {provider.name!r} is in use: {'; '.join(reasons)}",
            error_code="PROVIDER_IN_USE",
            details={"id": str(provider.id), "reasons": reasons, "teams": teams},
        )


def _live_provider(provider_id: uuid.UUID) -> Select[Provider]:
    return select(Provider).where(Provider.id == provider_id, Provider.deleted_at.is_(None))


async def get_provider_row(session: AsyncSession, provider_id: uuid.UUID, *, lock: bool = False) -> Provider:
    """A live (not deleted) provider, or 404 ``PROVIDER_NOT_FOUND``. ``lock`` takes a row lock (PostgreSQL)
    so that writes under one provider (limits, the single default endpoint) are serialised."""
    stmt = _live_provider(provider_id)
    if lock:
        stmt = stmt.with_for_update()
    provider = await session.scalar(stmt)
    if provider is None:
        raise NotFoundError("provider", provider_id)
    return provider


async def resolve_provider(session: AsyncSession, ref: str | uuid.UUID) -> Provider:
    """A live provider by id or by name (``ref`` may be either); 404 ``PROVIDER_NOT_FOUND`` otherwise."""
    if isinstance(ref, uuid.UUID):
        return await get_provider_row(session, ref)
    try:
        as_id = uuid.UUID(ref)
    except ValueError:
        as_id = None
    if as_id is not None:
        found = await session.scalar(_live_provider(as_id))
        if found is not None:
            return found
    provider = await session.scalar(select(Provider).where(Provider.name == ref, Provider.deleted_at.is_(None)))
    if provider is None:
        raise NotFoundError("provider", ref)
    return provider


def provider_name_taken(name: str) -> ConflictError:
    return ConflictError(
        f"a provider named {name!r} already exists", error_code="PROVIDER_NAME_EXISTS", details={"name": name}
    )


async def _ensure_provider_name_free(session: AsyncSession, name: str, *, exclude: uuid.UUID | None = None) -> None:
    stmt = select(Provider.id).where(Provider.name == name, Provider.deleted_at.is_(None))
    if exclude is not None:
        stmt = stmt.where(Provider.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise provider_name_taken(name)


async def check_provider_children(session: AsyncSession, provider: Provider, provider_type: str) -> None:
    """Every endpoint and credential already under ``provider`` must suit ``provider_type`` (on type changes)."""
    endpoints = list(await session.scalars(select(ProviderEndpoint).where(ProviderEndpoint.provider_id == provider.id)))
    if not adapter_for(provider_type).takes_credentials:
        credentials = await session.scalar(
            select(func.count()).select_from(ProviderCredential).where(ProviderCredential.provider_id == provider.id)
        )
        if endpoints or credentials:
            raise validation_failed(
                [
                    field_error(
                        "type", f"a {provider_type} provider takes no endpoints or credentials; remove them first"
                    )
                ]
            )
        return
    for endpoint in endpoints:
        check_endpoint_rules(
            provider_type, {name: getattr(endpoint, name) for name in ENDPOINT_RULE_FIELDS}, endpoint_name=endpoint.name
        )


async def get_provider(session: AsyncSession, context: AppContext, provider_id: uuid.UUID) -> ProviderRead:
    async def load() -> ProviderRead:
        return ProviderRead.model_validate(await get_provider_row(session, provider_id))

    return await cached(context, ("provider", provider_id), load)


async def list_providers(
    session: AsyncSession,
    context: AppContext,
    page: PageParams,
    *,
    provider_type: str | None = None,
    is_active: bool | None = None,
) -> Page[ProviderRead]:
    async def load() -> Page[ProviderRead]:
        stmt = select(Provider).where(Provider.deleted_at.is_(None))
        if provider_type is not None:
            stmt = stmt.where(Provider.type == provider_type)
        if is_active is not None:
            stmt = stmt.where(Provider.is_active.is_(is_active))
        rows, total = await paginate(session, stmt.order_by(Provider.name, Provider.id), page)
        return Page[ProviderRead].build([ProviderRead.model_validate(r) for r in rows], total, page)

    key = ("providers", provider_type, is_active, page.page, page.size)
    return await cached(context, key, load)


async def create_provider(
    session: AsyncSession, context: AppContext, data: ProviderCreate, *, actor: str
) -> ProviderRead:
    await _ensure_provider_name_free(session, data.name)
    provider = Provider(id=uuid.uuid4(), **columns_of(data, only_set=False))
    session.add(provider)
    await flush_or_conflict(session, provider_name_taken(data.name))
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type="provider",
        resource_id=provider.id,
        details={"name": provider.name, "type": provider.type},
    )
    await commit_and_invalidate(session, context)
    return ProviderRead.model_validate(provider)


async def update_provider(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, data: ProviderUpdate, *, actor: str
) -> ProviderRead:
    provider = await get_provider_row(session, provider_id, lock=True)
    values = columns_of(data, only_set=True)
    if "name" in values and values["name"] != provider.name:
        await _ensure_provider_name_free(session, values["name"], exclude=provider.id)
    if "type" in values and values["type"] != provider.type:
        await check_provider_children(session, provider, values["type"])
    changed = apply_changes(provider, values)
    if changed:
        await flush_or_conflict(session, provider_name_taken(provider.name))
        audit.record(
            session,
            actor=actor,
            action="update",
            resource_type="provider",
            resource_id=provider.id,
            details={"name": provider.name, "fields": changed},
        )
        await commit_and_invalidate(session, context)
    return ProviderRead.model_validate(provider)


async def set_provider_status(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, is_active: bool, *, actor: str
) -> ProviderRead:
    provider = await get_provider_row(session, provider_id, lock=True)
    if provider.is_active != is_active:
        provider.is_active = is_active
        audit.record(
            session,
            actor=actor,
            action="status_change",
            resource_type="provider",
            resource_id=provider.id,
            details={"name": provider.name, "is_active": is_active},
        )
        await commit_and_invalidate(session, context)
    return ProviderRead.model_validate(provider)


async def delete_provider(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, *, actor: str, in_use: InUse
) -> None:
    """Soft delete: the row stays (history), the name becomes reusable, and the provider's credentials are
    revoked (rows and ciphertexts destroyed) since nothing can reach them any more. Refused (409
    ``PROVIDER_IN_USE``) while ``in_use`` names a user of it."""
    provider = await get_provider_row(session, provider_id, lock=True)
    await _ensure_provider_unused(session, provider, in_use)
    provider.deleted_at = utcnow()
    revoked = await session.execute(delete(ProviderCredential).where(ProviderCredential.provider_id == provider.id))
    audit.record(
        session,
        actor=actor,
        action="delete",
        resource_type="provider",
        resource_id=provider.id,
        details={"name": provider.name, "credentials_revoked": getattr(revoked, "rowcount", 0)},
    )
    await commit_and_invalidate(session, context)
