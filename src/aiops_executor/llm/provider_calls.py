"""The routes that talk to providers: endpoint health checks, credential validation, model sync, model tests.

Each makes a real call through the provider's own client library (see ``runtime.probes``) and records
what it learnt: health status, validation status, the model catalogue.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.context import AppContext
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import AppError, ConflictError
from aiops_executor.llm import service
from aiops_executor.llm.models import LLMModel, Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.llm.runtime.clients import ClientConfigurationError
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig
from aiops_executor.llm.runtime.errors import HTTP_STATUS, FailureKind, classify
from aiops_executor.llm.runtime.probes import RemoteModel, list_remote_models
from aiops_executor.llm.runtime.service import credential_config, endpoint_config
from aiops_executor.llm.schemas import HealthStatus, ModelRead, ValidationStatus
from aiops_executor.services import ServiceContext

TEST_PROMPT = "Reply with the single word OK."
TEST_MAX_TOKENS = 16
MAX_OUTPUT_SHOWN = 500


class HealthCheckResult(BaseModel):
    status: HealthStatus
    latency_ms: float
    checked_at: datetime
    details: dict[str, Any] = Field(default_factory=dict)


class CredentialValidation(BaseModel):
    valid: bool
    validated_at: datetime
    error_code: str | None = None
    error_message: str | None = None


class ModelSyncResult(BaseModel):
    provider_id: uuid.UUID
    created: list[str]
    deprecated: list[str]
    reactivated: list[str]
    unchanged: int
    models: list[ModelRead]


class ModelTestResult(BaseModel):
    ok: bool
    latency_ms: float
    output: str | None = None
    error_code: str | None = None
    error_message: str | None = None


async def _secrets_for(context: AppContext, credential: ProviderCredential | None) -> DecryptedSecrets | None:
    if credential is None:
        return None
    opened = await service.decrypt_credential(context, credential_config(credential))
    return DecryptedSecrets(opened.api_key, opened.secret_key, opened.access_token)


async def _probe(
    provider_type: str, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None
) -> tuple[list[RemoteModel] | None, float, Exception | None]:
    started = time.perf_counter()
    try:
        models = await list_remote_models(provider_type, endpoint, secrets)
    except ClientConfigurationError:
        raise
    except Exception as exc:  # classified by the caller; never re-raised with its (possibly verbose) text
        return None, (time.perf_counter() - started) * 1000, exc
    return models, (time.perf_counter() - started) * 1000, None


def _configuration_problem(exc: ClientConfigurationError) -> AppError:
    return AppError(str(exc), error_code="PROVIDER_MISCONFIGURED", status_code=409)


async def _first_endpoint(session: AsyncSession, provider: Provider) -> ProviderEndpoint | None:
    endpoints = await service.ordered_endpoints(session, provider.id)
    defaults = [e for e in endpoints if e.is_default]
    candidates = defaults or endpoints
    return candidates[0] if candidates else None


# --------------------------------------------------------------------------------------------- health


async def check_endpoint_health(
    session: AsyncSession, context: AppContext, endpoint_id: uuid.UUID
) -> HealthCheckResult:
    endpoint, provider = await service.get_endpoint_row(session, endpoint_id)
    credentials = await service.usable_credentials(session, provider.id)
    if not credentials and provider.type != "ollama":
        raise ConflictError(
            f"provider {provider.name!r} has no usable credential to authenticate the health check",
            error_code="NO_USABLE_CREDENTIAL",
        )
    secrets = await _secrets_for(context, credentials[0] if credentials else None)
    try:
        models, latency_ms, error = await _probe(provider.type, endpoint_config(endpoint), secrets)
    except ClientConfigurationError as exc:
        raise _configuration_problem(exc) from None

    details: dict[str, Any] = {"endpoint": endpoint.name}
    if error is None:
        slow = latency_ms > context.settings.health_degraded_latency_ms
        status = HealthStatus.degraded if slow else HealthStatus.healthy
        details["model_count"] = len(models or [])
        if slow:
            details["reason"] = f"latency above {context.settings.health_degraded_latency_ms:.0f} ms"
    else:
        failure = classify(error)
        # A reachable endpoint that refuses our key, or throttles us, is degraded rather than down.
        reachable = failure.kind in (FailureKind.credential, FailureKind.rate_limited, FailureKind.not_found)
        status = HealthStatus.degraded if reachable else HealthStatus.unhealthy
        details.update(error_code=failure.error_code, error_message=failure.message, provider_status=failure.status)

    checked_at = utcnow()
    endpoint.health_status = status.value
    endpoint.last_health_check = checked_at
    await service.commit_and_invalidate(session, context)
    return HealthCheckResult(status=status, latency_ms=round(latency_ms, 1), checked_at=checked_at, details=details)


# --------------------------------------------------------------------------------------------- validation


async def validate_credential(
    session: AsyncSession, context: AppContext, credential_id: uuid.UUID, *, actor: str
) -> CredentialValidation:
    credential = await service.get_credential_row(session, credential_id)
    provider = await service.get_provider_row(session, credential.provider_id)
    now = utcnow()
    result: CredentialValidation
    if credential.expires_at is not None and credential.expires_at <= now:
        result = CredentialValidation(
            valid=False,
            validated_at=now,
            error_code="CREDENTIAL_EXPIRED",
            error_message=f"credential {credential.alias!r} expired at {credential.expires_at.isoformat()}",
        )
    else:
        try:
            secrets = await _secrets_for(context, credential)
        except AppError as exc:  # undecryptable: already marked by decrypt_credential
            result = CredentialValidation(
                valid=False, validated_at=now, error_code=exc.error_code, error_message=exc.message
            )
        else:
            endpoint = await _first_endpoint(session, provider)
            if endpoint is None:
                raise ConflictError(
                    f"provider {provider.name!r} has no active endpoint to validate against",
                    error_code="NO_ACTIVE_ENDPOINT",
                )
            try:
                _, _, error = await _probe(provider.type, endpoint_config(endpoint), secrets)
            except ClientConfigurationError as exc:
                raise _configuration_problem(exc) from None
            result = _validation_outcome(credential, error, utcnow())

    audit.record(
        session,
        actor=actor,
        action="validate",
        resource_type="credential",
        resource_id=credential.id,
        details={"valid": result.valid, "error_code": result.error_code},
    )
    await service.commit_and_invalidate(session, context)
    return result


def _validation_outcome(credential: ProviderCredential, error: Exception | None, now: datetime) -> CredentialValidation:
    if error is None:
        credential.validation_status = ValidationStatus.valid.value
        credential.last_validated_at = now
        return CredentialValidation(valid=True, validated_at=now)
    failure = classify(error)
    if failure.kind is FailureKind.credential:
        credential.validation_status = ValidationStatus.invalid.value
        credential.last_validated_at = now
    # Any other failure (provider down, throttled) says nothing about the key: its status is left as it was.
    return CredentialValidation(
        valid=False, validated_at=now, error_code=failure.error_code, error_message=failure.message
    )


# --------------------------------------------------------------------------------------------- sync


def _new_model_type(model_id: str) -> str:
    return "embedding" if "embed" in model_id.lower() else "chat"


def _default_capabilities(model_type: str) -> dict[str, Any]:
    if model_type == "embedding":
        return {"embedding": {"supported": True, "score": 3}}
    return {name: {"supported": True, "score": 3} for name in ("chat", "text_generation", "streaming")}


async def sync_models(
    session: AsyncSession, context: AppContext, provider_id: uuid.UUID, *, actor: str
) -> ModelSyncResult:
    provider = await service.get_provider_row(session, provider_id)
    endpoint = await _first_endpoint(session, provider)
    if endpoint is None and provider.type != "simulator":
        raise ConflictError(f"provider {provider.name!r} has no active endpoint", error_code="NO_ACTIVE_ENDPOINT")
    credentials = await service.usable_credentials(session, provider.id)
    if not credentials and provider.type not in ("ollama", "simulator"):
        raise ConflictError(f"provider {provider.name!r} has no usable credential", error_code="NO_USABLE_CREDENTIAL")
    secrets = await _secrets_for(context, credentials[0] if credentials else None)
    try:
        remote, _, error = await _probe(provider.type, endpoint_config(endpoint) if endpoint else None, secrets)
    except ClientConfigurationError as exc:
        raise _configuration_problem(exc) from None
    if error is not None or remote is None:
        failure = classify(error) if error else None
        raise AppError(
            f"could not read the model list of {provider.name!r}: {failure.message if failure else 'no answer'}",
            error_code=failure.error_code if failure else "PROVIDER_ERROR",
            status_code=HTTP_STATUS[failure.kind] if failure else 502,
        )

    remote_ids = {m.model_id: m for m in remote}
    stored = {m.model_id: m for m in await session.scalars(select(LLMModel).where(LLMModel.provider_id == provider.id))}
    created, deprecated, reactivated = [], [], []
    for model_id, info in remote_ids.items():
        if len(model_id) > 100:
            continue  # cannot be stored under the contract's limit; skipped rather than truncated
        row = stored.get(model_id)
        if row is None:
            model_type = _new_model_type(model_id)
            session.add(
                LLMModel(
                    id=uuid.uuid4(),
                    provider_id=provider.id,
                    model_id=model_id,
                    name=(info.name or model_id)[:100],
                    type=model_type,
                    status="available",
                    default_params={},
                    capabilities=_default_capabilities(model_type),
                    recommended_scenarios=[],
                )
            )
            created.append(model_id)
        elif row.status == "deprecated":
            row.status = "available"
            reactivated.append(model_id)
    for model_id, row in stored.items():
        if model_id not in remote_ids and row.status != "deprecated":
            row.status = "deprecated"
            deprecated.append(model_id)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="sync",
        resource_type="provider",
        resource_id=provider.id,
        details={"created": created, "deprecated": deprecated, "reactivated": reactivated},
    )
    await service.commit_and_invalidate(session, context)
    rows = await session.scalars(
        select(LLMModel).where(LLMModel.provider_id == provider.id).order_by(LLMModel.model_id)
    )
    return ModelSyncResult(
        provider_id=provider.id,
        created=sorted(created),
        deprecated=sorted(deprecated),
        reactivated=sorted(reactivated),
        unchanged=len(remote_ids) - len(created) - len(reactivated),
        models=[ModelRead.model_validate(row) for row in rows],
    )


# --------------------------------------------------------------------------------------------- test


async def run_model_test(session: AsyncSession, context: ServiceContext, model_uuid: uuid.UUID) -> ModelTestResult:
    row = await service.get_model_row(session, model_uuid)
    provider = await service.get_provider_row(session, row.provider_id)
    started = time.perf_counter()
    try:
        chat = await context.model_runtime.get_chat_model(
            session, provider.id, row.model_id, {"max_tokens": TEST_MAX_TOKENS}
        )
        await session.commit()  # end the read transaction before the (slow) provider call
        reply = await chat.ainvoke([HumanMessage(TEST_PROMPT)])
    except AppError as exc:
        return ModelTestResult(
            ok=False, latency_ms=_since(started), error_code=exc.error_code, error_message=exc.message
        )
    except ClientConfigurationError as exc:
        return ModelTestResult(
            ok=False, latency_ms=_since(started), error_code="PROVIDER_MISCONFIGURED", error_message=str(exc)
        )
    return ModelTestResult(ok=True, latency_ms=_since(started), output=str(reply.text)[:MAX_OUTPUT_SHOWN])


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
