"""LLM configuration rules and storage: providers, endpoints (access points), credentials (access keys), models.

Conventions of this module:
- Deleted providers are soft-deleted (``deleted_at``); they and everything under them answer 404.
- Every write adds its audit entry to the same transaction, commits, then invalidates the config cache.
- Reads go through ``context.config_cache`` and cache response schema objects (never ORM rows).
- Secrets are encrypted per row and column (see :func:`credential_aad`) and never leave this module in
  plaintext except through :func:`decrypt_credential`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from aiops_executor.audit import service as audit
from aiops_executor.core.context import AppContext
from aiops_executor.core.crypto import DecryptionError, associated_data, mask_secret
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import AppError, ConflictError, NotFoundError, ValidationFailed
from aiops_executor.core.pagination import Page, PageParams
from aiops_executor.llm.models import LLMModel, Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.llm.schemas import (
    Capability,
    CredentialCreate,
    CredentialRead,
    CredentialUpdate,
    EndpointCreate,
    EndpointRead,
    EndpointUpdate,
    ModelCreate,
    ModelRead,
    ModelStatus,
    ModelType,
    ModelUpdate,
    ProviderCreate,
    ProviderRead,
    ProviderType,
    ProviderUpdate,
    ValidationStatus,
)
from aiops_executor.teams.references import teams_using

T = TypeVar("T")

CACHE_PREFIX = "llm"
CREDENTIALS_TABLE = "provider_credentials"
SECRET_COLUMNS = ("api_key_encrypted", "secret_key_encrypted", "access_token_encrypted")
MAX_ACCESS_TOKEN_LENGTH = 16_384

# Provider types whose endpoints must name a base URL, and what else each type needs.
BASE_URL_REQUIRED = frozenset(
    {ProviderType.azure_openai, ProviderType.ollama, ProviderType.vllm, ProviderType.openai_compatible}
)
ENDPOINT_RULE_FIELDS = ("base_url", "api_version", "region")


# --------------------------------------------------------------------------------------------- helpers


async def _cached(context: AppContext, key: tuple[Hashable, ...], loader: Callable[[], Awaitable[T]]) -> T:
    return await context.config_cache.get_or_load((CACHE_PREFIX, *key), loader)


def _column_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_column_value(k): _column_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_column_value(v) for v in value]
    return value


def columns_of(data: BaseModel, *, only_set: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """A schema's fields as column values (enums as strings, nested models as dicts, decimals kept exact)."""
    dumped = data.model_dump(exclude_unset=only_set)
    return {name: _column_value(value) for name, value in dumped.items() if name not in exclude}


def apply_changes(row: object, values: Mapping[str, Any]) -> list[str]:
    """Set the attributes that differ; returns the changed field names (never their values)."""
    changed = []
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return changed


def _field_error(field_name: str, message: str) -> dict[str, Any]:
    return {"loc": ["body", field_name], "message": message, "type": "value_error"}


def _validation_failed(errors: list[dict[str, Any]]) -> ValidationFailed:
    return ValidationFailed("; ".join(err["message"] for err in errors), details={"errors": errors})


def limit_exceeded(resource: str, limit: int, provider_id: uuid.UUID) -> ConflictError:
    return ConflictError(
        f"a provider may have at most {limit} {resource}s",
        error_code="LIMIT_EXCEEDED",
        details={"resource": resource, "limit": limit, "provider_id": str(provider_id)},
    )


async def flush_or_conflict(session: AsyncSession, conflict: ConflictError) -> None:
    """Flush; a unique-constraint race lost to a concurrent writer answers 409 like the pre-check does."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise conflict from None


async def commit_and_invalidate(session: AsyncSession, context: AppContext) -> None:
    await session.commit()
    context.config_cache.invalidate()


async def _paginate(session: AsyncSession, stmt: Select[T], page: PageParams) -> tuple[list[T], int]:
    total = await session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = await session.scalars(stmt.offset(page.offset).limit(page.size))
    return list(rows), total


# --------------------------------------------------------------------------------------------- providers

ProviderUsageCheck = Callable[[AsyncSession, Provider], Awaitable[str | None]]
_provider_usage_checks: list[ProviderUsageCheck] = []


def register_provider_usage_check(check: ProviderUsageCheck) -> None:
    """Let another domain (teams) veto provider deletion: ``check`` returns a reason while the provider is used.

    Deleting a provider for which any check returns a reason answers 409 ``PROVIDER_IN_USE``.
    """
    if check not in _provider_usage_checks:
        _provider_usage_checks.append(check)


async def _ensure_provider_unused(session: AsyncSession, provider: Provider) -> None:
    teams = await teams_using(session, provider_id=provider.id)
    reasons = [f"team {team['name']!r} uses it" for team in teams]
    reasons += [reason for check in _provider_usage_checks if (reason := await check(session, provider))]
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
    if provider_type == ProviderType.simulator:
        credentials = await session.scalar(
            select(func.count()).select_from(ProviderCredential).where(ProviderCredential.provider_id == provider.id)
        )
        if endpoints or credentials:
            raise _validation_failed(
                [_field_error("type", "a simulator provider takes no endpoints or credentials; remove them first")]
            )
        return
    for endpoint in endpoints:
        check_endpoint_rules(
            provider_type, {name: getattr(endpoint, name) for name in ENDPOINT_RULE_FIELDS}, endpoint_name=endpoint.name
        )


async def get_provider(session: AsyncSession, context: AppContext, provider_id: uuid.UUID) -> ProviderRead:
    async def load() -> ProviderRead:
        return ProviderRead.model_validate(await get_provider_row(session, provider_id))

    return await _cached(context, ("provider", provider_id), load)


async def list_providers(
    session: AsyncSession,
    context: AppContext,
    page: PageParams,
    *,
    provider_type: ProviderType | None = None,
    is_active: bool | None = None,
) -> Page[ProviderRead]:
    async def load() -> Page[ProviderRead]:
        stmt = select(Provider).where(Provider.deleted_at.is_(None))
        if provider_type is not None:
            stmt = stmt.where(Provider.type == provider_type.value)
        if is_active is not None:
            stmt = stmt.where(Provider.is_active.is_(is_active))
        rows, total = await _paginate(session, stmt.order_by(Provider.name, Provider.id), page)
        return Page[ProviderRead].build([ProviderRead.model_validate(r) for r in rows], total, page)

    key = ("providers", provider_type, is_active, page.page, page.size)
    return await _cached(context, key, load)


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


async def delete_provider(session: AsyncSession, context: AppContext, provider_id: uuid.UUID, *, actor: str) -> None:
    """Soft delete: the row stays (history), the name becomes reusable, and the provider's credentials are
    revoked (rows and ciphertexts destroyed) since nothing can reach them any more."""
    provider = await get_provider_row(session, provider_id, lock=True)
    await _ensure_provider_unused(session, provider)
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


# --------------------------------------------------------------------------------------------- endpoints


def check_endpoint_rules(provider_type: str, values: Mapping[str, Any], *, endpoint_name: str | None = None) -> None:
    """What an endpoint of a provider type must carry. Raises 422 ``VALIDATION_ERROR`` naming what is missing."""
    if provider_type == ProviderType.simulator:
        raise _validation_failed([_field_error("provider_id", "simulator providers run offline and take no endpoints")])
    where = f"endpoint {endpoint_name!r} of " if endpoint_name else ""
    errors = []
    if provider_type in BASE_URL_REQUIRED and not values.get("base_url"):
        errors.append(_field_error("base_url", f"{where}an {provider_type} provider needs a base_url"))
    if provider_type == ProviderType.azure_openai and not values.get("api_version"):
        errors.append(_field_error("api_version", f"{where}an azure_openai provider needs an api_version"))
    if provider_type == ProviderType.aws_bedrock and not values.get("region"):
        errors.append(_field_error("region", f"{where}an aws_bedrock provider needs a region"))
    if errors:
        raise _validation_failed(errors)


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

    return await _cached(context, ("endpoint", endpoint_id), load)


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
        rows, total = await _paginate(session, stmt, page)
        return Page[EndpointRead].build([EndpointRead.model_validate(r) for r in rows], total, page)

    return await _cached(context, ("endpoints", provider_id, page.page, page.size), load)


async def create_endpoint(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, data: EndpointCreate, *, actor: str
) -> EndpointRead:
    provider = await get_provider_row(session, provider_id, lock=True)
    values = columns_of(data, only_set=False)
    check_endpoint_rules(provider.type, values)
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
    endpoint, provider = await get_endpoint_row(session, endpoint_id)
    await get_provider_row(session, provider.id, lock=True)
    values = columns_of(data, only_set=True)
    merged = {name: values.get(name, getattr(endpoint, name)) for name in ENDPOINT_RULE_FIELDS}
    check_endpoint_rules(provider.type, merged)
    if "name" in values and values["name"] != endpoint.name:
        await _ensure_endpoint_name_free(session, provider.id, values["name"], exclude=endpoint.id)
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


# --------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class DecryptedCredential:
    """Plaintext secrets of one credential, for the model runtime only. Its repr never shows them."""

    credential_id: uuid.UUID
    provider_id: uuid.UUID
    alias: str
    api_key: str = field(repr=False)
    secret_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)


class SealedCredential(Protocol):
    """What :func:`decrypt_credential` needs: a ``ProviderCredential`` row or any snapshot of its columns."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def provider_id(self) -> uuid.UUID: ...

    @property
    def alias(self) -> str: ...

    @property
    def api_key_encrypted(self) -> str: ...

    @property
    def secret_key_encrypted(self) -> str | None: ...

    @property
    def access_token_encrypted(self) -> str | None: ...


def credential_aad(column: str, credential_id: uuid.UUID) -> bytes:
    """Associated data binding a ciphertext to its row and column (``SECRET_COLUMNS``)."""
    return associated_data(CREDENTIALS_TABLE, column, credential_id)


def credential_status(credential: ProviderCredential, now: datetime | None = None) -> ValidationStatus:
    """The stored status, reported as ``expired`` once ``expires_at`` has passed (unless undecryptable)."""
    status = ValidationStatus(credential.validation_status)
    expires_at = credential.expires_at
    if status is not ValidationStatus.undecryptable and expires_at is not None and expires_at <= (now or utcnow()):
        return ValidationStatus.expired
    return status


def _credential_read(credential: ProviderCredential) -> CredentialRead:
    return CredentialRead(
        id=credential.id,
        provider_id=credential.provider_id,
        alias=credential.alias,
        api_key_masked=credential.api_key_masked,
        has_secret_key=credential.secret_key_encrypted is not None,
        has_access_token=credential.access_token_encrypted is not None,
        expires_at=credential.expires_at,
        quota_limit=credential.quota_limit,
        quota_used=credential.quota_used,
        is_active=credential.is_active,
        validation_status=ValidationStatus(credential.validation_status),
        last_validated_at=credential.last_validated_at,
        created_at=credential.created_at,
        updated_at=credential.updated_at,
    )


def present_credential(read: CredentialRead, now: datetime | None = None) -> CredentialRead:
    """Apply expiry at response time, so a cached entry never reports a lapsed credential as usable."""
    if (
        read.validation_status is not ValidationStatus.undecryptable
        and read.expires_at is not None
        and read.expires_at <= (now or utcnow())
    ):
        return read.model_copy(update={"validation_status": ValidationStatus.expired})
    return read


def _check_secret_lengths(context: AppContext, secrets: Mapping[str, str | None]) -> None:
    limits = {
        "api_key": context.settings.max_api_key_length,
        "secret_key": context.settings.max_api_key_length,
        "access_token": MAX_ACCESS_TOKEN_LENGTH,
    }
    errors = [
        {
            "loc": ["body", name],
            "message": f"{name} must be at most {limits[name]} characters",
            "type": "string_too_long",
        }
        for name, value in secrets.items()
        if value is not None and len(value) > limits[name]
    ]
    if errors:
        raise _validation_failed(errors)


def _refuse_simulator_credentials(provider: Provider) -> None:
    if provider.type == ProviderType.simulator:
        raise _validation_failed(
            [_field_error("provider_id", "simulator providers run offline and take no credentials")]
        )


def _alias_taken(alias: str, provider_id: uuid.UUID) -> ConflictError:
    return ConflictError(
        f"the provider already has a credential aliased {alias!r}",
        error_code="CREDENTIAL_ALIAS_EXISTS",
        details={"alias": alias, "provider_id": str(provider_id)},
    )


async def _ensure_alias_free(
    session: AsyncSession, provider_id: uuid.UUID, alias: str, *, exclude: uuid.UUID | None = None
) -> None:
    stmt = select(ProviderCredential.id).where(
        ProviderCredential.provider_id == provider_id, ProviderCredential.alias == alias
    )
    if exclude is not None:
        stmt = stmt.where(ProviderCredential.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise _alias_taken(alias, provider_id)


def _encrypt(context: AppContext, column: str, credential_id: uuid.UUID, plaintext: str) -> str:
    return context.cipher.encrypt(plaintext, credential_aad(column, credential_id))


async def get_credential_row(session: AsyncSession, credential_id: uuid.UUID) -> ProviderCredential:
    """A credential of a live provider, or 404 ``CREDENTIAL_NOT_FOUND``."""
    credential = await session.scalar(
        select(ProviderCredential)
        .join(Provider, Provider.id == ProviderCredential.provider_id)
        .where(ProviderCredential.id == credential_id, Provider.deleted_at.is_(None))
    )
    if credential is None:
        raise NotFoundError("credential", credential_id)
    return credential


async def get_credential(session: AsyncSession, context: AppContext, credential_id: uuid.UUID) -> CredentialRead:
    async def load() -> CredentialRead:
        return _credential_read(await get_credential_row(session, credential_id))

    return present_credential(await _cached(context, ("credential", credential_id), load))


async def list_credentials(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, page: PageParams
) -> Page[CredentialRead]:
    async def load() -> Page[CredentialRead]:
        await get_provider_row(session, provider_id)
        stmt = (
            select(ProviderCredential)
            .where(ProviderCredential.provider_id == provider_id)
            .order_by(ProviderCredential.alias, ProviderCredential.id)
        )
        rows, total = await _paginate(session, stmt, page)
        return Page[CredentialRead].build([_credential_read(r) for r in rows], total, page)

    cached = await _cached(context, ("credentials", provider_id, page.page, page.size), load)
    now = utcnow()
    return cached.model_copy(update={"items": [present_credential(item, now) for item in cached.items]})


async def create_credential(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, data: CredentialCreate, *, actor: str
) -> CredentialRead:
    provider = await get_provider_row(session, provider_id, lock=True)
    _refuse_simulator_credentials(provider)
    _check_secret_lengths(
        context, {"api_key": data.api_key, "secret_key": data.secret_key, "access_token": data.access_token}
    )
    limit = context.settings.max_credentials_per_provider
    count = await session.scalar(
        select(func.count()).select_from(ProviderCredential).where(ProviderCredential.provider_id == provider.id)
    )
    if (count or 0) >= limit:
        raise limit_exceeded("credential", limit, provider.id)
    await _ensure_alias_free(session, provider.id, data.alias)
    credential_id = uuid.uuid4()  # the ciphertexts are bound to this id, so it is chosen before encrypting
    credential = ProviderCredential(
        id=credential_id,
        provider_id=provider.id,
        alias=data.alias,
        api_key_encrypted=_encrypt(context, "api_key_encrypted", credential_id, data.api_key),
        secret_key_encrypted=(
            _encrypt(context, "secret_key_encrypted", credential_id, data.secret_key) if data.secret_key else None
        ),
        access_token_encrypted=(
            _encrypt(context, "access_token_encrypted", credential_id, data.access_token) if data.access_token else None
        ),
        api_key_masked=mask_secret(data.api_key),
        expires_at=data.expires_at,
        quota_limit=data.quota_limit,
        quota_used=0,
        is_active=True,
        validation_status=ValidationStatus.unknown.value,
    )
    session.add(credential)
    await flush_or_conflict(session, _alias_taken(data.alias, provider.id))
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type="credential",
        resource_id=credential.id,
        details={
            "provider_id": str(provider.id),
            "alias": credential.alias,
            "has_secret_key": data.secret_key is not None,
            "has_access_token": data.access_token is not None,
        },
    )
    await commit_and_invalidate(session, context)
    return present_credential(_credential_read(credential))


async def update_credential(
    session: AsyncSession, context: AppContext, credential_id: uuid.UUID, data: CredentialUpdate, *, actor: str
) -> CredentialRead:
    """Edit metadata and/or rotate secrets; a rotation resets the validation status (audited as ``rotate``)."""
    credential = await get_credential_row(session, credential_id)
    given = data.model_fields_set
    secrets: dict[str, str | None] = {
        name: getattr(data, name) for name in ("api_key", "secret_key", "access_token") if name in given
    }
    _check_secret_lengths(context, secrets)
    metadata: dict[str, Any] = {
        name: getattr(data, name) for name in ("alias", "expires_at", "quota_limit", "is_active") if name in given
    }
    if "alias" in metadata and metadata["alias"] != credential.alias:
        await _ensure_alias_free(session, credential.provider_id, metadata["alias"], exclude=credential.id)
    changed = apply_changes(credential, metadata)
    rotated: list[str] = []
    for name, plaintext in secrets.items():
        column = f"{name}_encrypted"
        if plaintext is None:
            if getattr(credential, column) is not None:
                setattr(credential, column, None)
                rotated.append(name)
            continue
        setattr(credential, column, _encrypt(context, column, credential.id, plaintext))
        if name == "api_key":
            credential.api_key_masked = mask_secret(plaintext)
        rotated.append(name)
    if rotated:
        credential.validation_status = ValidationStatus.unknown.value
        credential.last_validated_at = None
    if changed or rotated:
        await flush_or_conflict(session, _alias_taken(credential.alias, credential.provider_id))
        audit.record(
            session,
            actor=actor,
            action="rotate" if rotated else "update",
            resource_type="credential",
            resource_id=credential.id,
            details={
                "provider_id": str(credential.provider_id),
                "alias": credential.alias,
                "fields": changed + rotated,
            },
        )
        await commit_and_invalidate(session, context)
    return present_credential(_credential_read(credential))


async def delete_credential(
    session: AsyncSession, context: AppContext, credential_id: uuid.UUID, *, actor: str
) -> None:
    """Revoke: the row and its ciphertexts are destroyed."""
    credential = await get_credential_row(session, credential_id)
    await session.delete(credential)
    audit.record(
        session,
        actor=actor,
        action="delete",
        resource_type="credential",
        resource_id=credential.id,
        details={"provider_id": str(credential.provider_id), "alias": credential.alias, "revoked": True},
    )
    await commit_and_invalidate(session, context)


async def usable_credentials(
    session: AsyncSession, provider_id: uuid.UUID, *, now: datetime | None = None
) -> list[ProviderCredential]:
    """Credentials a call may use: active, not expired, under quota, not known bad. Oldest first."""
    now = now or utcnow()
    return list(
        await session.scalars(
            select(ProviderCredential)
            .where(
                ProviderCredential.provider_id == provider_id,
                ProviderCredential.is_active.is_(True),
                ProviderCredential.validation_status.not_in(
                    [ValidationStatus.invalid.value, ValidationStatus.undecryptable.value]
                ),
                or_(ProviderCredential.expires_at.is_(None), ProviderCredential.expires_at > now),
                or_(
                    ProviderCredential.quota_limit.is_(None),
                    ProviderCredential.quota_used < ProviderCredential.quota_limit,
                ),
            )
            .order_by(ProviderCredential.created_at, ProviderCredential.id)
        )
    )


async def _mark_undecryptable(context: AppContext, credential_id: uuid.UUID) -> None:
    async with context.database.sessionmaker() as session:
        credential = await session.get(ProviderCredential, credential_id)
        if credential is not None and credential.validation_status != ValidationStatus.undecryptable:
            credential.validation_status = ValidationStatus.undecryptable.value
            await session.commit()
    context.config_cache.invalidate()


async def decrypt_credential(context: AppContext, credential: SealedCredential) -> DecryptedCredential:
    """Open a credential's secrets for a provider call.

    When a ciphertext cannot be opened (unknown master key, tampering, ciphertext moved between rows or
    columns) the credential is marked ``undecryptable`` in its own short transaction, which is committed,
    and 409 ``CREDENTIAL_UNDECRYPTABLE`` is raised; the admin must re-enter the keys (PUT /credentials/{id}).
    Call it outside a write transaction that holds the credential's row.
    """
    plaintexts: dict[str, str | None] = {}
    try:
        for column in SECRET_COLUMNS:
            stored = getattr(credential, column)
            plaintexts[column] = (
                None if stored is None else context.cipher.decrypt(stored, credential_aad(column, credential.id))
            )
    except DecryptionError:
        await _mark_undecryptable(context, credential.id)
        if isinstance(credential, ProviderCredential):  # keep a loaded row in step without dirtying its session
            set_committed_value(credential, "validation_status", ValidationStatus.undecryptable.value)
        raise AppError(
            f"credential {credential.alias!r} cannot be decrypted; re-enter its keys",
            error_code="CREDENTIAL_UNDECRYPTABLE",
            status_code=409,
            details={"credential_id": str(credential.id), "provider_id": str(credential.provider_id)},
        ) from None
    api_key = plaintexts["api_key_encrypted"]
    assert api_key is not None
    return DecryptedCredential(
        credential_id=credential.id,
        provider_id=credential.provider_id,
        alias=credential.alias,
        api_key=api_key,
        secret_key=plaintexts["secret_key_encrypted"],
        access_token=plaintexts["access_token_encrypted"],
    )


# --------------------------------------------------------------------------------------------- models


def _model_id_taken(model_id: str, provider_id: uuid.UUID) -> ConflictError:
    return ConflictError(
        f"the provider already has a model {model_id!r}",
        error_code="MODEL_ID_EXISTS",
        details={"model_id": model_id, "provider_id": str(provider_id)},
    )


async def _ensure_model_id_free(
    session: AsyncSession, provider_id: uuid.UUID, model_id: str, *, exclude: uuid.UUID | None = None
) -> None:
    stmt = select(LLMModel.id).where(LLMModel.provider_id == provider_id, LLMModel.model_id == model_id)
    if exclude is not None:
        stmt = stmt.where(LLMModel.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise _model_id_taken(model_id, provider_id)


def _live_models() -> Select[LLMModel]:
    return select(LLMModel).join(Provider, Provider.id == LLMModel.provider_id).where(Provider.deleted_at.is_(None))


async def get_model_row(session: AsyncSession, model_uuid: uuid.UUID, *, lock: bool = False) -> LLMModel:
    """A model of a live provider, or 404 ``MODEL_NOT_FOUND``. ``lock`` takes the model's row lock (PostgreSQL)."""
    stmt = _live_models().where(LLMModel.id == model_uuid)
    if lock:
        stmt = stmt.with_for_update(of=LLMModel)
    model = await session.scalar(stmt)
    if model is None:
        raise NotFoundError("model", model_uuid)
    return model


async def resolve_model(session: AsyncSession, provider: Provider, ref: str | uuid.UUID) -> LLMModel:
    """A model of ``provider`` by its ``model_id`` (e.g. ``gpt-4o``) or by its row id; 404 otherwise."""
    if isinstance(ref, str):
        model = await session.scalar(
            select(LLMModel).where(LLMModel.provider_id == provider.id, LLMModel.model_id == ref)
        )
        if model is not None:
            return model
        try:
            ref = uuid.UUID(ref)
        except ValueError:
            raise NotFoundError("model", ref) from None
    model = await session.scalar(select(LLMModel).where(LLMModel.provider_id == provider.id, LLMModel.id == ref))
    if model is None:
        raise NotFoundError("model", ref)
    return model


def supports(capabilities: Mapping[str, Any], capability: Capability) -> int | None:
    """The score of a supported capability, or None when the model does not support it."""
    spec = capabilities.get(capability.value)
    if isinstance(spec, dict) and spec.get("supported") is True:
        score = spec.get("score")
        return int(score) if isinstance(score, int) else 0
    return None


async def get_model(session: AsyncSession, context: AppContext, model_uuid: uuid.UUID) -> ModelRead:
    async def load() -> ModelRead:
        return ModelRead.model_validate(await get_model_row(session, model_uuid))

    return await _cached(context, ("model", model_uuid), load)


async def list_models(
    session: AsyncSession,
    context: AppContext,
    page: PageParams,
    *,
    provider_id: uuid.UUID | None = None,
    model_type: ModelType | None = None,
    capability: Capability | None = None,
    status: ModelStatus | None = None,
) -> Page[ModelRead]:
    async def load() -> Page[ModelRead]:
        stmt = _live_models()
        if provider_id is not None:
            stmt = stmt.where(LLMModel.provider_id == provider_id)
        if model_type is not None:
            stmt = stmt.where(LLMModel.type == model_type.value)
        if status is not None:
            stmt = stmt.where(LLMModel.status == status.value)
        stmt = stmt.order_by(LLMModel.model_id, LLMModel.id)
        if capability is None:
            rows, total = await _paginate(session, stmt, page)
        else:
            # Capabilities live in a JSON column; filtering them portably is done here (model counts are small).
            matching = [m for m in await session.scalars(stmt) if supports(m.capabilities, capability) is not None]
            rows, total = matching[page.offset : page.offset + page.size], len(matching)
        return Page[ModelRead].build([ModelRead.model_validate(r) for r in rows], total, page)

    key = ("models", provider_id, model_type, capability, status, page.page, page.size)
    return await _cached(context, key, load)


async def models_by_capability(
    session: AsyncSession, context: AppContext, capability: Capability, page: PageParams
) -> Page[ModelRead]:
    """Models supporting ``capability``, best score first, deprecated ones left out."""

    async def load() -> Page[ModelRead]:
        stmt = _live_models().where(LLMModel.status != ModelStatus.deprecated.value)
        scored = [
            (score, model)
            for model in await session.scalars(stmt)
            if (score := supports(model.capabilities, capability)) is not None
        ]
        scored.sort(key=lambda item: (-item[0], item[1].model_id, str(item[1].id)))
        rows = [model for _, model in scored[page.offset : page.offset + page.size]]
        return Page[ModelRead].build([ModelRead.model_validate(r) for r in rows], len(scored), page)

    return await _cached(context, ("models-by-capability", capability, page.page, page.size), load)


async def create_model(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, data: ModelCreate, *, actor: str
) -> ModelRead:
    provider = await get_provider_row(session, provider_id)
    await _ensure_model_id_free(session, provider.id, data.model_id)
    model = LLMModel(id=uuid.uuid4(), provider_id=provider.id, **columns_of(data, only_set=False))
    session.add(model)
    await flush_or_conflict(session, _model_id_taken(data.model_id, provider.id))
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type="model",
        resource_id=model.id,
        details={"provider_id": str(provider.id), "model_id": model.model_id},
    )
    await commit_and_invalidate(session, context)
    return ModelRead.model_validate(model)


async def update_model(
    session: AsyncSession, context: AppContext, model_uuid: uuid.UUID, data: ModelUpdate, *, actor: str
) -> ModelRead:
    model = await get_model_row(session, model_uuid)
    values = columns_of(data, only_set=True)
    if "model_id" in values and values["model_id"] != model.model_id:
        await _ensure_model_id_free(session, model.provider_id, values["model_id"], exclude=model.id)
    changed = apply_changes(model, values)
    if changed:
        await flush_or_conflict(session, _model_id_taken(model.model_id, model.provider_id))
        audit.record(
            session,
            actor=actor,
            action="update",
            resource_type="model",
            resource_id=model.id,
            details={"provider_id": str(model.provider_id), "model_id": model.model_id, "fields": changed},
        )
        await commit_and_invalidate(session, context)
    return ModelRead.model_validate(model)


async def delete_model(session: AsyncSession, context: AppContext, model_uuid: uuid.UUID, *, actor: str) -> None:
    """Refused (409 ``MODEL_IN_USE``) while a team uses the model."""
    model = await get_model_row(session, model_uuid, lock=True)
    teams = await teams_using(session, model_row_id=model.id)
    if teams:
        raise ConflictError(
            f"model {model.model_id!r} is in use by team(s) {', '.join(repr(team['name']) for team in teams)}",
            error_code="MODEL_IN_USE",
            details={"id": str(model.id), "provider_id": str(model.provider_id), "teams": teams},
        )
    await session.delete(model)
    audit.record(
        session,
        actor=actor,
        action="delete",
        resource_type="model",
        resource_id=model.id,
        details={"provider_id": str(model.provider_id), "model_id": model.model_id},
    )
    await commit_and_invalidate(session, context)


# --------------------------------------------------------------------------------------------- embedded default

SIMULATOR_PROVIDER = "local-sim"
SIMULATOR_MODEL = "sim-1"
SEED_ACTOR = "system:seed"


async def seed_simulator(session: AsyncSession, context: AppContext) -> bool:
    """On a fresh embedded install, register the offline ``local-sim`` provider with its ``sim-1`` model,
    so the service runs a team with no network and no keys. Never re-seeds once any provider existed
    (a deleted ``local-sim`` stays deleted)."""
    if await session.scalar(select(func.count()).select_from(Provider)):
        return False
    provider = await create_provider(
        session,
        context,
        ProviderCreate(
            name=SIMULATOR_PROVIDER,
            type=ProviderType.simulator,
            description="Built-in offline simulator: deterministic and rule-based, not an AI.",
        ),
        actor=SEED_ACTOR,
    )
    supported = {"supported": True, "score": 3}
    await create_model(
        session,
        context,
        provider.id,
        ModelCreate(
            model_id=SIMULATOR_MODEL,
            name="Simulator (not an AI)",
            input_price=Decimal(0),
            output_price=Decimal(0),
            capabilities={
                capability.value: supported
                for capability in (
                    Capability.chat,
                    Capability.text_generation,
                    Capability.function_calling,
                    Capability.structured_output,
                    Capability.streaming,
                )
            },
            recommended_scenarios=["demo", "testing", "load testing"],
        ),
        actor=SEED_ACTOR,
    )
    return True
