"""The runtime's entry point: resolve a model reference, snapshot its configuration, hand out chat models."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.context import AppContext
from aiops_executor.llm import service as llm_service
from aiops_executor.llm.models import LLMModel, Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.llm.runtime.breaker import BreakerPolicy
from aiops_executor.llm.runtime.calls import CallAttribution, CallGate, CallRecord, CallSink
from aiops_executor.llm.runtime.config import (
    CredentialConfig,
    DecryptedSecrets,
    EndpointConfig,
    ModelBinding,
    ModelConfig,
    merged_params,
)
from aiops_executor.llm.runtime.failover import FailoverChatModel
from aiops_executor.llm.runtime.shared_state import SharedRuntimeState
from aiops_executor.llm.runtime.state import RuntimeState


def endpoint_config(row: ProviderEndpoint) -> EndpointConfig:
    return EndpointConfig(
        id=row.id,
        name=row.name,
        base_url=row.base_url,
        api_version=row.api_version,
        region=row.region,
        timeout_connect=row.timeout_connect,
        timeout_read=row.timeout_read,
        retry_count=row.retry_count,
        retry_interval=row.retry_interval,
        priority=row.priority,
        is_default=row.is_default,
        health_status=row.health_status,
        rpm=row.rpm,
        tpm=row.tpm,
    )


def credential_config(row: ProviderCredential) -> CredentialConfig:
    return CredentialConfig(
        id=row.id,
        provider_id=row.provider_id,
        alias=row.alias,
        api_key_encrypted=row.api_key_encrypted,
        secret_key_encrypted=row.secret_key_encrypted,
        access_token_encrypted=row.access_token_encrypted,
        expires_at=row.expires_at,
        quota_limit=row.quota_limit,
        quota_used=row.quota_used,
    )


def model_config(provider: Provider, row: LLMModel) -> ModelConfig:
    return ModelConfig(
        id=row.id,
        provider_id=provider.id,
        provider_name=provider.name,
        provider_type=provider.type,
        model_id=row.model_id,
        name=row.name,
        status=row.status,
        input_price=Decimal(row.input_price) if row.input_price is not None else None,
        output_price=Decimal(row.output_price) if row.output_price is not None else None,
        default_params=dict(row.default_params or {}),
        capabilities=dict(row.capabilities or {}),
        max_output_tokens=row.max_output_tokens,
    )


CREDENTIAL_CACHE_KINDS = frozenset({"credential", "credentials"})


def invalidate_credential_reads(context: AppContext) -> None:
    """``quota_used`` changed: drop the cached credential reads (and only those; calls are frequent)."""
    context.config_cache.invalidate(
        lambda key: (
            isinstance(key, tuple)
            and len(key) > 1
            and key[0] == llm_service.CACHE_PREFIX
            and key[1] in CREDENTIAL_CACHE_KINDS
        )
    )


@dataclass
class UsageTotals:
    calls: int = 0
    failures: int = 0
    # Only what providers reported and priced; ``unreported`` counts the successful calls that were not.
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unreported: int = 0


@dataclass
class UsageLedger:
    """Per-model totals since the process started, keyed by (provider name, model id)."""

    totals: dict[tuple[str, str], UsageTotals] = field(default_factory=lambda: defaultdict(UsageTotals))

    def add(self, record: CallRecord) -> None:
        entry = self.totals[(record.model.provider_name, record.model.model_id)]
        entry.calls += 1
        if record.outcome != "success":
            entry.failures += 1
        if record.input_tokens is None or record.output_tokens is None or record.cost is None:
            entry.unreported += 1
        entry.input_tokens += record.input_tokens or 0
        entry.output_tokens += record.output_tokens or 0
        entry.cost += record.cost or 0


def runtime_state(context: AppContext) -> RuntimeState:
    """Cool-downs, per-endpoint caps, rpm/tpm limits and circuit breakers: shared with every process over the rate
    limits' Redis connection when there is one (``AIOPS_REDIS_URL``), else kept in this process."""
    settings = context.settings
    values: dict[str, Any] = {
        "cooldown_seconds": settings.failover_cooldown_seconds,
        "max_concurrency_per_endpoint": settings.max_concurrent_calls_per_endpoint,
        "rate_limit_window_seconds": settings.endpoint_rate_limit_window_seconds,
        "breaker_policy": BreakerPolicy(
            consecutive_failures=settings.circuit_breaker_consecutive_failures,
            failure_rate_percent=settings.circuit_breaker_failure_rate_percent,
            window_calls=settings.circuit_breaker_window_calls,
            cooldown_seconds=settings.circuit_breaker_cooldown_seconds,
        ),
        "metrics": context.telemetry.metrics,
    }
    link = context.rate_limits.redis
    if link is not None:
        return SharedRuntimeState(**values, link=link)
    return RuntimeState(**values)


class ModelRuntime:
    """Turns stored configuration into chat models. One per process (lives on the AppContext)."""

    def __init__(self, context: AppContext, state: RuntimeState | None = None, gate: CallGate | None = None) -> None:
        self.context = context
        self.state = state or runtime_state(context)
        self.ledger = UsageLedger()
        # Admits and counts every call (budgets, the ledger of calls behind usage reports); None: nothing does.
        self.gate = gate

    async def load_binding(self, session: AsyncSession, provider_ref: str | uuid.UUID, model_ref: str) -> ModelBinding:
        """Snapshot of a model and every active endpoint and usable credential of its provider."""
        provider = await llm_service.resolve_provider(session, provider_ref)
        model = await llm_service.resolve_model(session, provider, model_ref)
        endpoints = await llm_service.ordered_endpoints(session, provider.id)
        credentials = await llm_service.usable_credentials(session, provider.id)
        return ModelBinding(
            model=model_config(provider, model),
            endpoints=tuple(endpoint_config(e) for e in endpoints),
            credentials=tuple(credential_config(c) for c in credentials),
        )

    async def open_secrets(self, credential: CredentialConfig) -> DecryptedSecrets:
        decrypted = await llm_service.decrypt_credential(self.context, credential)
        return DecryptedSecrets(decrypted.api_key, decrypted.secret_key, decrypted.access_token)

    async def record_call(self, record: CallRecord) -> None:
        self.ledger.add(record)
        if record.credential_id is None:
            return
        async with self.context.database.sessionmaker() as session:
            result = await session.execute(
                update(ProviderCredential)
                .where(ProviderCredential.id == record.credential_id)
                .values(quota_used=ProviderCredential.quota_used + 1)
                .returning(
                    ProviderCredential.quota_used,
                    ProviderCredential.quota_limit,
                    ProviderCredential.api_key_encrypted,
                    ProviderCredential.secret_key_encrypted,
                    ProviderCredential.access_token_encrypted,
                )
            )
            row = result.one_or_none()
            await session.commit()
        invalidate_credential_reads(self.context)
        if row is not None and row.quota_limit is not None and row.quota_used >= row.quota_limit:
            fingerprint = (
                row.api_key_encrypted,
                row.secret_key_encrypted,
                row.access_token_encrypted,
                row.quota_limit,
            )
            self.state.exhaust(record.credential_id, fingerprint)

    def chat_model(
        self,
        binding: ModelBinding,
        overrides: dict[str, Any] | None = None,
        *,
        also_record: CallSink | None = None,
        attribution: CallAttribution | None = None,
    ) -> FailoverChatModel:
        """``also_record`` receives every call too (an execution counting its own usage); ``attribution`` says
        whose calls they are (the run's, for its budgets)."""
        on_call = self.record_call
        if also_record is not None:
            extra = also_record

            async def on_call(record: CallRecord) -> None:
                await self.record_call(record)
                await extra(record)

        return FailoverChatModel(
            binding=binding,
            params=merged_params(binding.model, overrides),
            state=self.state,
            open_secrets=self.open_secrets,
            on_call=on_call,
            telemetry=self.context.telemetry,
            gate=self.gate,
            attribution=attribution or CallAttribution(),
            default_output_tokens=self.context.settings.budget_default_output_tokens,
        )

    async def get_chat_model(
        self,
        session: AsyncSession,
        provider_ref: str | uuid.UUID,
        model_ref: str,
        overrides: dict[str, Any] | None = None,
    ) -> FailoverChatModel:
        return self.chat_model(await self.load_binding(session, provider_ref, model_ref), overrides)
