"""Endpoints (access points) of a provider: base URL, region, timeouts, failover priority, health."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import Field, StrictBool
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core import egress
from aiops_executor.core.changes import apply_changes, flush_or_conflict
from aiops_executor.core.context import AppContext
from aiops_executor.core.errors import ConflictError, NotFoundError
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.llm.models import Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.llm.schemas import (
    EndpointCreate,
    EndpointRead,
    EndpointUpdate,
)
from aiops_executor.llm.service.common import (
    ENDPOINT_RULE_FIELDS,
    cached,
    check_base_url_addresses,
    check_endpoint_rules,
    columns_of,
    commit_and_invalidate,
    limit_exceeded,
)
from aiops_executor.llm.service.providers import get_provider_row

CONFIRM_FLAG = "confirm_credentials_for_new_host"


class EndpointUpdateRequest(EndpointUpdate):
    """``PUT /endpoints/{id}``: the update, plus the confirmation a move to another host needs."""

    not_null: ClassVar[tuple[str, ...]] = (*EndpointUpdate.not_null, CONFIRM_FLAG)  # type: ignore[assignment]

    confirm_credentials_for_new_host: StrictBool = Field(
        default=False,
        description="Required (true) when base_url moves the endpoint to another host (scheme, host or port) "
        "while the provider has credentials: their keys will be sent there. Audited.",
    )


def host_of(base_url: str | None) -> tuple[str, str, int | None] | None:
    """The origin an endpoint's key is sent to (None: the provider's documented default)."""
    return egress.credential_origin_of(base_url)


async def provider_has_credentials(session: AsyncSession, provider_id: uuid.UUID) -> bool:
    stmt = select(ProviderCredential.id).where(ProviderCredential.provider_id == provider_id).limit(1)
    return await session.scalar(stmt) is not None


async def require_credential_confirmation(
    session: AsyncSession, provider: Provider, endpoint: ProviderEndpoint, new_base_url: str | None, confirmed: bool
) -> bool:
    """Whether the endpoint moves to another host with the provider's stored keys; without ``confirmed``
    such a move is 409 ``CREDENTIAL_CONFIRMATION_REQUIRED`` (a session must not quietly redirect keys)."""
    if host_of(new_base_url) == host_of(endpoint.base_url):
        return False
    if not await provider_has_credentials(session, provider.id):
        return False
    if not confirmed:
        raise ConflictError(
            f"changing endpoint {endpoint.name!r} to another host sends provider {provider.name!r}'s stored keys "
            f"there; re-enter the credentials or repeat the request with {CONFIRM_FLAG!r}: true",
            error_code="CREDENTIAL_CONFIRMATION_REQUIRED",
            details={"endpoint_id": str(endpoint.id), "field": "base_url"},
        )
    return True


def _endpoint_name_taken(name: str, provider_id: uuid.UUID) -> ConflictError:
    return ConflictError(
        f"the provider already has an endpoint named {name!r}",
        error_code="ENDPOINT_NAME_EXISTS",
        details={"name": name, "provider_id": str(provider_id)},
    )


async def _ensure_endpoint_name_free(
    session: AsyncSession, provider_id: uuid.UUID, name: str, *, exclude: uuid.UUID | None = None
) -> None:
    stmt = select(ProviderEndpoint.id).where(ProviderEndpoint.provider_id == provider_id, ProviderEndpoint.name == name)
    if exclude is not None:
        stmt = stmt.where(ProviderEndpoint.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise _endpoint_name_taken(name, provider_id)


async def count_endpoints(session: AsyncSession, provider_id: uuid.UUID) -> int:
    stmt = select(func.count()).select_from(ProviderEndpoint).where(ProviderEndpoint.provider_id == provider_id)
    return await session.scalar(stmt) or 0


async def unset_other_defaults(session: AsyncSession, endpoint: ProviderEndpoint) -> list[ProviderEndpoint]:
    """Only one default endpoint per provider: clear the flag on the others; returns those changed."""
    others = list(
        await session.scalars(
            select(ProviderEndpoint).where(
                ProviderEndpoint.provider_id == endpoint.provider_id,
                ProviderEndpoint.id != endpoint.id,
                ProviderEndpoint.is_default.is_(True),
            )
        )
    )
    for other in others:
        other.is_default = False
    return others


async def get_endpoint_row(session: AsyncSession, endpoint_id: uuid.UUID) -> tuple[ProviderEndpoint, Provider]:
    """An endpoint of a live provider (with the provider), or 404 ``ENDPOINT_NOT_FOUND``."""
    row = (
        await session.execute(
            select(ProviderEndpoint, Provider)
            .join(Provider, Provider.id == ProviderEndpoint.provider_id)
            .where(ProviderEndpoint.id == endpoint_id, Provider.deleted_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError("endpoint", endpoint_id)
    return row[0], row[1]


async def ordered_endpoints(session: AsyncSession, provider_id: uuid.UUID) -> list[ProviderEndpoint]:
    """Active endpoints of a provider in failover order: priority (lower first), then the default, then name."""
    return list(
        await session.scalars(
            select(ProviderEndpoint)
            .where(ProviderEndpoint.provider_id == provider_id, ProviderEndpoint.is_active.is_(True))
            .order_by(ProviderEndpoint.priority, ProviderEndpoint.is_default.desc(), ProviderEndpoint.name)
        )
    )


async def get_endpoint(session: AsyncSession, context: AppContext, endpoint_id: uuid.UUID) -> EndpointRead:
    async def load() -> EndpointRead:
        endpoint, _ = await get_endpoint_row(session, endpoint_id)
        return EndpointRead.model_validate(endpoint)

    return await cached(context, ("endpoint", endpoint_id), load)


async def list_endpoints(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, page: PageParams
) -> Page[EndpointRead]:
    async def load() -> Page[EndpointRead]:
        await get_provider_row(session, provider_id)
        stmt = (
            select(ProviderEndpoint)
            .where(ProviderEndpoint.provider_id == provider_id)
            .order_by(ProviderEndpoint.priority, ProviderEndpoint.name, ProviderEndpoint.id)
        )
        rows, total = await paginate(session, stmt, page)
        return Page[EndpointRead].build([EndpointRead.model_validate(r) for r in rows], total, page)

    return await cached(context, ("endpoints", provider_id, page.page, page.size), load)


async def create_endpoint(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, data: EndpointCreate, *, actor: str
) -> EndpointRead:
    await check_base_url_addresses(data.base_url, context.settings)
    provider = await get_provider_row(session, provider_id, lock=True)
    values = columns_of(data, only_set=False)
    check_endpoint_rules(provider.type, values, settings=context.settings)
    limit = context.settings.max_endpoints_per_provider
    if await count_endpoints(session, provider.id) >= limit:
        raise limit_exceeded("endpoint", limit, provider.id)
    await _ensure_endpoint_name_free(session, provider.id, data.name)
    endpoint = ProviderEndpoint(id=uuid.uuid4(), provider_id=provider.id, health_status="unknown", **values)
    session.add(endpoint)
    await flush_or_conflict(session, _endpoint_name_taken(data.name, provider.id))
    unset = await unset_other_defaults(session, endpoint) if endpoint.is_default else []
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type="endpoint",
        resource_id=endpoint.id,
        details={
            "provider_id": str(provider.id),
            "name": endpoint.name,
            "is_default": endpoint.is_default,
            "default_unset_on": [str(e.id) for e in unset],
        },
    )
    await commit_and_invalidate(session, context)
    return EndpointRead.model_validate(endpoint)


async def update_endpoint(
    session: AsyncSession, context: AppContext, endpoint_id: uuid.UUID, data: EndpointUpdate, *, actor: str
) -> EndpointRead:
    if data.base_url is not None:
        await check_base_url_addresses(data.base_url, context.settings)
    endpoint, provider = await get_endpoint_row(session, endpoint_id)
    await get_provider_row(session, provider.id, lock=True)
    values = columns_of(data, only_set=True, exclude=(CONFIRM_FLAG,))
    merged = {name: values.get(name, getattr(endpoint, name)) for name in ENDPOINT_RULE_FIELDS}
    check_endpoint_rules(provider.type, merged, settings=context.settings)
    if "name" in values and values["name"] != endpoint.name:
        await _ensure_endpoint_name_free(session, provider.id, values["name"], exclude=endpoint.id)
    moved = False
    if "base_url" in values:
        confirmed = bool(getattr(data, CONFIRM_FLAG, False))
        moved = await require_credential_confirmation(session, provider, endpoint, values["base_url"], confirmed)
    changed = apply_changes(endpoint, values)
    if changed:
        await flush_or_conflict(session, _endpoint_name_taken(endpoint.name, provider.id))
        unset = await unset_other_defaults(session, endpoint) if "is_default" in changed and endpoint.is_default else []
        audit.record(
            session,
            actor=actor,
            action="update",
            resource_type="endpoint",
            resource_id=endpoint.id,
            details={
                "provider_id": str(provider.id),
                "name": endpoint.name,
                "fields": changed,
                "default_unset_on": [str(e.id) for e in unset],
                **({"credentials_confirmed_for_new_host": True} if moved else {}),
            },
        )
        await commit_and_invalidate(session, context)
    return EndpointRead.model_validate(endpoint)


async def delete_endpoint(session: AsyncSession, context: AppContext, endpoint_id: uuid.UUID, *, actor: str) -> None:
    endpoint, provider = await get_endpoint_row(session, endpoint_id)
    await session.delete(endpoint)
    audit.record(
        session,
        actor=actor,
        action="delete",
        resource_type="endpoint",
        resource_id=endpoint.id,
        details={"provider_id": str(provider.id), "name": endpoint.name},
    )
    await commit_and_invalidate(session, context)
