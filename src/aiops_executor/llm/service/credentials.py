"""Credentials (access keys) of a provider, encrypted per row and column (see :func:`credential_aad`); their
plaintext leaves this module only through :func:`open_credential` and :func:`decrypt_credential`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from aiops_executor.audit import service as audit
from aiops_executor.core.changes import apply_changes, flush_or_conflict
from aiops_executor.core.context import AppContext
from aiops_executor.core.crypto import DecryptionError, associated_data, mask_secret
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import AppError, ConflictError, NotFoundError
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.models import Provider, ProviderCredential
from aiops_executor.llm.schemas import (
    CredentialCreate,
    CredentialRead,
    CredentialUpdate,
    ValidationStatus,
)
from aiops_executor.llm.service.common import (
    cached,
    commit_and_invalidate,
    field_error,
    limit_exceeded,
    validation_failed,
)
from aiops_executor.llm.service.providers import get_provider_row

CREDENTIALS_TABLE = "provider_credentials"
SECRET_COLUMNS = ("api_key_encrypted", "secret_key_encrypted", "access_token_encrypted")
MAX_ACCESS_TOKEN_LENGTH = 16_384


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
        raise validation_failed(errors)


def _refuse_offline_credentials(provider: Provider) -> None:
    if not adapter_for(provider.type).takes_credentials:
        raise validation_failed(
            [field_error("provider_id", f"{provider.type} providers run offline and take no credentials")]
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

    return present_credential(await cached(context, ("credential", credential_id), load))


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
        rows, total = await paginate(session, stmt, page)
        return Page[CredentialRead].build([_credential_read(r) for r in rows], total, page)

    stored = await cached(context, ("credentials", provider_id, page.page, page.size), load)
    now = utcnow()
    return stored.model_copy(update={"items": [present_credential(item, now) for item in stored.items]})


async def create_credential(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, data: CredentialCreate, *, actor: str
) -> CredentialRead:
    provider = await get_provider_row(session, provider_id, lock=True)
    _refuse_offline_credentials(provider)
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


class CredentialUndecryptable(AppError):
    status_code = 409
    error_code = "CREDENTIAL_UNDECRYPTABLE"


def open_credential(context: AppContext, credential: SealedCredential) -> DecryptedCredential:
    """A credential's plaintext secrets, in memory; ``CredentialUndecryptable`` when a ciphertext cannot be
    opened (unknown master key, tampering, ciphertext moved between rows or columns). Writes nothing."""
    plaintexts: dict[str, str | None] = {}
    try:
        for column in SECRET_COLUMNS:
            stored = getattr(credential, column)
            plaintexts[column] = (
                None if stored is None else context.cipher.decrypt(stored, credential_aad(column, credential.id))
            )
    except DecryptionError:
        raise CredentialUndecryptable(
            f"credential {credential.alias!r} cannot be decrypted with the current master keys; re-enter its keys",
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


async def decrypt_credential(context: AppContext, credential: SealedCredential) -> DecryptedCredential:
    """``open_credential`` for a provider call: an undecryptable credential is also marked ``undecryptable``
    in its own short transaction, which is committed (the admin must re-enter the keys with PUT
    /credentials/{id}). Call it outside a write transaction (on SQLite, outside any transaction: each holds the
    database's write lock); a request that holds one marks the row itself (see ``provider_calls``)."""
    try:
        return open_credential(context, credential)
    except CredentialUndecryptable:
        await _mark_undecryptable(context, credential.id)
        if isinstance(credential, ProviderCredential):  # keep a loaded row in step without dirtying its session
            set_committed_value(credential, "validation_status", ValidationStatus.undecryptable.value)
        raise
