"""What the LLM configuration tells other domains, without their reading its tables: the catalog of providers
and models a team may reference, a hold on the ones a team references, and who uses a provider or a model.

Teams build on it (``teams.validation``, ``teams.service``); the LLM domain imports no team module. Before it
deletes a provider or a model it asks an ``InUse`` it is handed (the teams' answer, wired by the endpoints).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.llm.models import LLMModel, Provider
from aiops_executor.llm.schemas import Capability


class InUse(Protocol):
    """``[{"id", "name"}]`` of what uses this provider or this model (the teams whose definition names it)."""

    async def __call__(
        self, session: AsyncSession, *, provider_id: uuid.UUID | None = None, model_row_id: uuid.UUID | None = None
    ) -> list[dict[str, str]]: ...


@dataclass(frozen=True)
class ProviderEntry:
    id: uuid.UUID
    name: str
    type: str
    is_active: bool
    deleted: bool = False


@dataclass(frozen=True)
class ModelEntry:
    id: uuid.UUID  # the row id
    provider_id: uuid.UUID
    model_id: str  # the provider's identifier, e.g. ``gpt-4o``
    type: str
    status: str
    capabilities: Mapping[str, Any] = field(default_factory=dict)

    def supports(self, capability: Capability) -> bool:
        spec = self.capabilities.get(capability.value)
        return isinstance(spec, Mapping) and spec.get("supported") is True


@dataclass(frozen=True)
class ModelLookup:
    """What a ``(model_provider, model_id)`` reference resolves to; either part may be missing."""

    provider: ProviderEntry | None
    model: ModelEntry | None


class ModelCatalog:
    """An immutable snapshot of the providers and models a topology may reference.

    Deleted providers may be included (``deleted=True``) so that a reference to one says so; their names
    never shadow a live provider's.
    """

    def __init__(self, providers: Iterable[ProviderEntry] = (), models: Iterable[ModelEntry] = ()) -> None:
        self._by_id: dict[uuid.UUID, ProviderEntry] = {}
        self._by_name: dict[str, ProviderEntry] = {}
        for provider in providers:
            self._by_id[provider.id] = provider
            known = self._by_name.get(provider.name)
            if known is None or (known.deleted and not provider.deleted):
                self._by_name[provider.name] = provider
        self._models: dict[tuple[uuid.UUID, str], ModelEntry] = {(m.provider_id, m.model_id): m for m in models}

    def provider(self, ref: str) -> ProviderEntry | None:
        """A provider by id (its string form) or by name; a live provider's name wins over a deleted one's."""
        try:
            by_id = self._by_id.get(uuid.UUID(ref))
        except ValueError:
            by_id = None
        return by_id if by_id is not None else self._by_name.get(ref)

    def model(self, provider_id: uuid.UUID, model_id: str) -> ModelEntry | None:
        return self._models.get((provider_id, model_id))

    def lookup(self, model_provider: str, model_id: str) -> ModelLookup:
        provider = self.provider(model_provider)
        if provider is None or provider.deleted:
            return ModelLookup(provider, None)
        return ModelLookup(provider, self.model(provider.id, model_id))


async def load(session: AsyncSession) -> ModelCatalog:
    """The providers (deleted ones included, flagged) and the models of live providers, in two queries."""
    providers = await session.execute(
        select(Provider.id, Provider.name, Provider.type, Provider.is_active, Provider.deleted_at)
    )
    models = await session.execute(
        select(
            LLMModel.id, LLMModel.provider_id, LLMModel.model_id, LLMModel.type, LLMModel.status, LLMModel.capabilities
        )
        .join(Provider, Provider.id == LLMModel.provider_id)
        .where(Provider.deleted_at.is_(None))
    )
    return ModelCatalog(
        [
            ProviderEntry(id=p.id, name=p.name, type=p.type, is_active=p.is_active, deleted=p.deleted_at is not None)
            for p in providers
        ],
        [
            ModelEntry(
                id=m.id,
                provider_id=m.provider_id,
                model_id=m.model_id,
                type=m.type,
                status=m.status,
                capabilities=m.capabilities or {},
            )
            for m in models
        ],
    )


async def hold(session: AsyncSession, references: set[tuple[uuid.UUID, uuid.UUID]]) -> bool:
    """Share-locks the referenced ``(provider id, model row id)`` until commit (PostgreSQL; SQLite serialises
    writers); False when one of them is gone (deleted meanwhile)."""
    if not references:
        return True
    provider_ids = {provider_id for provider_id, _ in references}
    model_ids = {model_id for _, model_id in references}
    live_providers = set(
        await session.scalars(
            select(Provider.id)
            .where(Provider.id.in_(provider_ids), Provider.deleted_at.is_(None))
            .with_for_update(read=True)
        )
    )
    live_models = set(
        await session.scalars(select(LLMModel.id).where(LLMModel.id.in_(model_ids)).with_for_update(read=True))
    )
    return live_providers == provider_ids and live_models == model_ids
