"""Models of a provider: ids, prices, capabilities, status; looked up by id or capability."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.changes import apply_changes, flush_or_conflict
from aiops_executor.core.context import AppContext
from aiops_executor.core.errors import ConflictError, NotFoundError
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.llm.catalog import InUse
from aiops_executor.llm.models import LLMModel, Provider
from aiops_executor.llm.schemas import (
    Capability,
    ModelCreate,
    ModelRead,
    ModelStatus,
    ModelType,
    ModelUpdate,
)
from aiops_executor.llm.service.common import (
    cached,
    columns_of,
    commit_and_invalidate,
)
from aiops_executor.llm.service.providers import get_provider_row


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

    return await cached(context, ("model", model_uuid), load)


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
            rows, total = await paginate(session, stmt, page)
        else:
            # Capabilities live in a JSON column; filtering them portably is done here (model counts are small).
            matching = [m for m in await session.scalars(stmt) if supports(m.capabilities, capability) is not None]
            rows, total = matching[page.offset : page.offset + page.size], len(matching)
        return Page[ModelRead].build([ModelRead.model_validate(r) for r in rows], total, page)

    key = ("models", provider_id, model_type, capability, status, page.page, page.size)
    return await cached(context, key, load)


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

    return await cached(context, ("models-by-capability", capability, page.page, page.size), load)


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


async def delete_model(
    session: AsyncSession, context: AppContext, model_uuid: uuid.UUID, *, actor: str, in_use: InUse
) -> None:
    """Refused (409 ``MODEL_IN_USE``) while ``in_use`` names a team that uses the model."""
    model = await get_model_row(session, model_uuid, lock=True)
    teams = await in_use(session, model_row_id=model.id)
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
