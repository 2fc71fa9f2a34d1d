"""Export and idempotent import of LLM configuration (providers, endpoints, models — never credentials)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.changes import apply_changes, flush_or_conflict
from aiops_executor.core.context import AppContext
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import ConflictError, ValidationFailed
from aiops_executor.llm.models import LLMModel, Provider, ProviderEndpoint
from aiops_executor.llm.schemas import (
    ConfigDocument,
    EndpointConfig,
    ImportResult,
    ModelConfig,
    ProviderConfig,
)
from aiops_executor.llm.service import (
    ENDPOINT_RULE_FIELDS,
    check_base_url_addresses,
    check_endpoint_rules,
    check_provider_children,
    columns_of,
    commit_and_invalidate,
    limit_exceeded,
    provider_name_taken,
    require_credential_confirmation,
)

CHILDREN = ("endpoints", "models")


async def export_config(session: AsyncSession) -> ConfigDocument:
    providers = list(
        await session.scalars(select(Provider).where(Provider.deleted_at.is_(None)).order_by(Provider.name))
    )
    ids = [provider.id for provider in providers]
    endpoints: dict[uuid.UUID, list[EndpointConfig]] = defaultdict(list)
    models: dict[uuid.UUID, list[ModelConfig]] = defaultdict(list)
    if ids:
        for endpoint in await session.scalars(
            select(ProviderEndpoint)
            .where(ProviderEndpoint.provider_id.in_(ids))
            .order_by(ProviderEndpoint.priority, ProviderEndpoint.name)
        ):
            endpoints[endpoint.provider_id].append(EndpointConfig.model_validate(endpoint, from_attributes=True))
        for model in await session.scalars(
            select(LLMModel).where(LLMModel.provider_id.in_(ids)).order_by(LLMModel.model_id)
        ):
            models[model.provider_id].append(ModelConfig.model_validate(model, from_attributes=True))
    return ConfigDocument(
        version=1,
        exported_at=utcnow(),
        providers=[
            ProviderConfig.model_validate(
                {
                    "name": provider.name,
                    "type": provider.type,
                    "description": provider.description,
                    "is_active": provider.is_active,
                    "endpoints": endpoints[provider.id],
                    "models": models[provider.id],
                }
            )
            for provider in providers
        ],
    )


def _check_document(doc: ConfigDocument) -> None:
    """Duplicates inside the document and more than one default endpoint per provider are refused up front."""
    errors: list[dict[str, Any]] = []

    def duplicates(loc: list[str | int], what: str, keys: list[str]) -> None:
        seen: set[str] = set()
        for index, key in enumerate(keys):
            if key in seen:
                errors.append({"loc": [*loc, index], "message": f"duplicate {what} {key!r}", "type": "value_error"})
            seen.add(key)

    duplicates(["body", "providers"], "provider name", [p.name for p in doc.providers])
    for index, provider in enumerate(doc.providers):
        base: list[str | int] = ["body", "providers", index]
        duplicates([*base, "endpoints"], "endpoint name", [e.name for e in provider.endpoints])
        duplicates([*base, "models"], "model_id", [m.model_id for m in provider.models])
        if sum(1 for e in provider.endpoints if e.is_default) > 1:
            errors.append(
                {
                    "loc": [*base, "endpoints"],
                    "message": f"provider {provider.name!r} has more than one default endpoint",
                    "type": "value_error",
                }
            )
    if errors:
        # Every problem is in details.errors; the message names the first (a document may repeat one 1000 times).
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationFailed(f"{errors[0]['message']}{more}", details={"errors": errors})


class _Importer:
    def __init__(self, session: AsyncSession, context: AppContext, actor: str) -> None:
        self.session = session
        self.context = context
        self.actor = actor
        self.result = ImportResult()

    def _audit(self, action: str, resource_type: str, resource_id: uuid.UUID, details: dict[str, Any]) -> None:
        audit.record(
            self.session,
            actor=self.actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            details={"source": "import", **details},
        )

    def _count(self, outcome: str, kind: str) -> None:
        counts = getattr(self.result, outcome)
        setattr(counts, kind, getattr(counts, kind) + 1)

    async def provider(self, doc: ProviderConfig) -> None:
        session = self.session
        provider = await session.scalar(
            select(Provider).where(Provider.name == doc.name, Provider.deleted_at.is_(None)).with_for_update()
        )
        existed = provider is not None
        if provider is None:
            provider = Provider(id=uuid.uuid4(), **columns_of(doc, only_set=False, exclude=CHILDREN))
            session.add(provider)
            await flush_or_conflict(session, provider_name_taken(doc.name))
            self._audit("create", "provider", provider.id, {"name": provider.name, "type": provider.type})
            self._count("created", "providers")
        else:
            changed = apply_changes(provider, columns_of(doc, only_set=True, exclude=CHILDREN))
            if changed:
                self._audit("update", "provider", provider.id, {"name": provider.name, "fields": changed})
            self._count("updated" if changed else "unchanged", "providers")
        await self.endpoints(provider, doc.endpoints, existed=existed)
        await self.models(provider, doc.models, existed=existed)
        if existed:
            await session.flush()
            await check_provider_children(session, provider, provider.type)

    async def endpoints(self, provider: Provider, docs: list[EndpointConfig], *, existed: bool) -> None:
        current: dict[str, ProviderEndpoint] = {}
        if existed:
            rows = await self.session.scalars(
                select(ProviderEndpoint).where(ProviderEndpoint.provider_id == provider.id)
            )
            current = {row.name: row for row in rows}
        default = next((doc.name for doc in docs if doc.is_default), None)
        for doc in docs:
            endpoint = current.get(doc.name)
            if endpoint is None:
                values = columns_of(doc, only_set=False)
                check_endpoint_rules(provider.type, values, endpoint_name=doc.name, settings=self.context.settings)
                endpoint = ProviderEndpoint(id=uuid.uuid4(), provider_id=provider.id, health_status="unknown", **values)
                self.session.add(endpoint)
                current[doc.name] = endpoint
                self._audit("create", "endpoint", endpoint.id, {"provider_id": str(provider.id), "name": doc.name})
                self._count("created", "endpoints")
                continue
            values = columns_of(doc, only_set=True)
            if default is not None and doc.name != default:
                values["is_default"] = False  # the document names another default
            merged = {name: values.get(name, getattr(endpoint, name)) for name in ENDPOINT_RULE_FIELDS}
            check_endpoint_rules(provider.type, merged, endpoint_name=doc.name, settings=self.context.settings)
            if "base_url" in values:  # an import never moves stored keys to another host (PUT can, confirmed)
                await require_credential_confirmation(self.session, provider, endpoint, values["base_url"], False)
            changed = apply_changes(endpoint, values)
            if changed:
                self._audit(
                    "update",
                    "endpoint",
                    endpoint.id,
                    {"provider_id": str(provider.id), "name": doc.name, "fields": changed},
                )
            self._count("updated" if changed else "unchanged", "endpoints")
        limit = self.context.settings.max_endpoints_per_provider
        if len(current) > limit:
            raise limit_exceeded("endpoint", limit, provider.id)
        if default is not None:
            in_document = {doc.name for doc in docs}
            for name, endpoint in current.items():
                if name not in in_document and endpoint.is_default:
                    endpoint.is_default = False
                    self._audit(
                        "update",
                        "endpoint",
                        endpoint.id,
                        {"provider_id": str(provider.id), "name": name, "fields": ["is_default"]},
                    )
                    self._count("updated", "endpoints")

    async def models(self, provider: Provider, docs: list[ModelConfig], *, existed: bool) -> None:
        current: dict[str, LLMModel] = {}
        if existed:
            rows = await self.session.scalars(select(LLMModel).where(LLMModel.provider_id == provider.id))
            current = {row.model_id: row for row in rows}
        for doc in docs:
            model = current.get(doc.model_id)
            if model is None:
                model = LLMModel(id=uuid.uuid4(), provider_id=provider.id, **columns_of(doc, only_set=False))
                self.session.add(model)
                self._audit("create", "model", model.id, {"provider_id": str(provider.id), "model_id": doc.model_id})
                self._count("created", "models")
                continue
            changed = apply_changes(model, columns_of(doc, only_set=True))
            if changed:
                self._audit(
                    "update",
                    "model",
                    model.id,
                    {"provider_id": str(provider.id), "model_id": doc.model_id, "fields": changed},
                )
            self._count("updated" if changed else "unchanged", "models")


async def import_config(session: AsyncSession, context: AppContext, doc: ConfigDocument, *, actor: str) -> ImportResult:
    """Upsert providers (by name), their endpoints (by name) and models (by model_id) in one transaction.

    Nothing absent from the document is deleted; fields absent from an entry keep their stored value.
    Importing the same document twice changes nothing the second time.
    """
    _check_document(doc)
    for provider_doc in doc.providers:
        for endpoint_doc in provider_doc.endpoints:
            await check_base_url_addresses(endpoint_doc.base_url, context.settings, endpoint_name=endpoint_doc.name)
    importer = _Importer(session, context, actor)
    try:
        for provider_doc in doc.providers:
            await importer.provider(provider_doc)
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError("the import conflicted with a concurrent change; retry it", error_code="CONFLICT") from None
    except BaseException:
        await session.rollback()
        raise
    result = importer.result
    audit.record(
        session,
        actor=actor,
        action="import",
        resource_type="config",
        resource_id=None,
        details=result.model_dump(),
    )
    await commit_and_invalidate(session, context)
    return result
