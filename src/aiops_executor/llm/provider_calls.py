"""The routes that talk to providers: endpoint health checks, credential validation, model sync, model tests.

Each makes a real call through the provider's own client library (its adapter's ``list_models``, the cheap
authenticated call) and records what it learnt: health status, validation status, the model catalogue.
Like chat calls, they fail over: routes (endpoint x credential) in priority order, healthy and not cooling
down first; an endpoint that is down or overloaded is cooled down for the model calls too.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import AppError, ConflictError
from aiops_executor.llm import service
from aiops_executor.llm.adapters import ProviderAdapter, adapter_for
from aiops_executor.llm.adapters.base import ClientConfigurationError, RemoteModel
from aiops_executor.llm.models import LLMModel, Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.llm.runtime.config import CredentialConfig, DecryptedSecrets
from aiops_executor.llm.runtime.errors import HTTP_STATUS, Failure, FailureKind
from aiops_executor.llm.runtime.routes import Route, cooldown_keys
from aiops_executor.llm.runtime.routing import cooling_last, endpoint_preference, penalise
from aiops_executor.llm.runtime.service import ModelRuntime, credential_config, endpoint_config
from aiops_executor.llm.schemas import EndpointRead, HealthStatus, ModelRead, ValidationStatus

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


@dataclass
class ProbeOutcome:
    """What asking a provider for its catalogue over some routes found."""

    models: list[RemoteModel] | None = None  # None: no route answered
    route: Route | None = None  # the route that answered
    latency_ms: float = 0.0  # of the last attempt
    failures: list[tuple[Route, Failure]] = field(default_factory=list)

    @property
    def last_failure(self) -> Failure | None:
        return self.failures[-1][1] if self.failures else None

    def attempts(self) -> list[dict[str, Any]]:
        return [route.attempt(f) for route, f in self.failures]

    def summary(self) -> str:
        """Each failed attempt in a user's terms: which endpoint (and key) said what."""
        return "; ".join(f"{route.where()}: {f.message}" for route, f in self.failures)


async def probe_routes(
    runtime: ModelRuntime,
    adapter: ProviderAdapter,
    routes: list[Route],
    *,
    secrets: dict[uuid.UUID, DecryptedSecrets | None],
    keep_going: frozenset[FailureKind],
) -> ProbeOutcome:
    """Lists the models over ``routes`` until one answers; a failure of a kind in ``keep_going`` moves on to
    the next route, any other ends the probe. ``secrets``: the opened key of each credential (None: it could
    not be opened; its routes are skipped)."""
    state = runtime.state
    await state.load_cooldowns({key for route in routes for key in cooldown_keys(route)})
    outcome = ProbeOutcome()
    for route in cooling_last(routes, state):
        opened = secrets.get(route.credential.id) if route.credential else None
        if route.credential is not None and opened is None:
            continue
        started = time.perf_counter()
        try:
            models = await adapter.list_models(route.endpoint, opened)
        except ClientConfigurationError:
            raise
        except Exception as exc:  # classified; never re-raised with its (possibly verbose) text
            failure = adapter.classify(exc)
            outcome.latency_ms = (time.perf_counter() - started) * 1000
            outcome.failures.append((route, failure))
            await penalise(state, route, failure)
            if failure.kind not in keep_going:
                return outcome
            continue
        outcome.latency_ms = (time.perf_counter() - started) * 1000
        outcome.models, outcome.route = models, route
        return outcome
    return outcome


# Failures after which another route may answer: the endpoint is down, overloaded or throttling us.
ROUTE_FAILURES = frozenset({FailureKind.unreachable, FailureKind.server, FailureKind.rate_limited})
# When any key will do (sync, health), a refused key is one more reason to try the next.
ANY_KEY_FAILURES = ROUTE_FAILURES | {FailureKind.credential}


def _configuration_problem(exc: ClientConfigurationError) -> AppError:
    return AppError(str(exc), error_code="PROVIDER_MISCONFIGURED", status_code=409)


def _open_all(
    runtime: ModelRuntime, credentials: list[ProviderCredential]
) -> tuple[dict[uuid.UUID, DecryptedSecrets | None], list[ProviderCredential]]:
    """Each credential's secrets (None where undecryptable), and the credentials that could not be opened."""
    opened: dict[uuid.UUID, DecryptedSecrets | None] = {}
    undecryptable: list[ProviderCredential] = []
    for credential in credentials:
        try:
            plain = service.open_credential(runtime.context, credential)
        except service.CredentialUndecryptable:
            opened[credential.id] = None
            undecryptable.append(credential)
            continue
        opened[credential.id] = DecryptedSecrets(plain.api_key, plain.secret_key, plain.access_token)
    return opened, undecryptable


def _mark_undecryptable(credentials: list[ProviderCredential]) -> None:
    # In the request's own transaction: on SQLite it holds the write lock another session would wait for.
    for credential in credentials:
        credential.validation_status = ValidationStatus.undecryptable.value


def _routes(endpoints: list[ProviderEndpoint], credentials: list[ProviderCredential]) -> list[Route]:
    options: list[CredentialConfig | None] = [credential_config(c) for c in credentials] or [None]
    return [Route(endpoint_config(e), option) for e in endpoints for option in options]


async def _active_endpoints(session: AsyncSession, provider: Provider) -> list[ProviderEndpoint]:
    """Active endpoints in failover order."""
    return sorted(await service.ordered_endpoints(session, provider.id), key=endpoint_preference)


async def _open_usable(
    session: AsyncSession, runtime: ModelRuntime, provider: Provider, credentials: list[ProviderCredential]
) -> dict[uuid.UUID, DecryptedSecrets | None]:
    """The usable credentials' secrets; those that cannot be decrypted are marked so (and skipped), and when
    none can be, 409 ``CREDENTIAL_UNDECRYPTABLE`` (the marks committed)."""
    opened, undecryptable = _open_all(runtime, credentials)
    _mark_undecryptable(undecryptable)
    if credentials and len(undecryptable) == len(credentials):
        await service.commit_and_invalidate(session, runtime.context)
        raise ConflictError(
            f"no credential of provider {provider.name!r} can be decrypted with the current master keys; "
            "re-enter their keys",
            error_code="CREDENTIAL_UNDECRYPTABLE",
        )
    return opened


# --------------------------------------------------------------------------------------------- health


async def check_endpoint_health(
    session: AsyncSession, runtime: ModelRuntime, endpoint_id: uuid.UUID
) -> HealthCheckResult:
    """One endpoint, authenticated with each usable credential in turn until one is accepted."""
    endpoint, provider = await service.get_endpoint_row(session, endpoint_id)
    adapter = adapter_for(provider.type)
    credentials = await service.usable_credentials(session, provider.id)
    if not credentials and adapter.needs_credential:
        raise ConflictError(
            f"provider {provider.name!r} has no usable credential to authenticate the health check",
            error_code="NO_USABLE_CREDENTIAL",
        )
    opened = await _open_usable(session, runtime, provider, credentials)
    try:
        outcome = await probe_routes(
            runtime, adapter, _routes([endpoint], credentials), secrets=opened, keep_going=ANY_KEY_FAILURES
        )
    except ClientConfigurationError as exc:
        raise _configuration_problem(exc) from None

    details: dict[str, Any] = {"endpoint": endpoint.name}
    threshold = runtime.context.settings.health_degraded_latency_ms
    cooling = await endpoint_cooldown(runtime, endpoint.id)
    if outcome.models is not None:
        slow = outcome.latency_ms > threshold
        status = HealthStatus.degraded if slow or cooling else HealthStatus.healthy
        details["model_count"] = len(outcome.models)
        if slow:
            details["reason"] = f"latency above {threshold:.0f} ms"
    else:
        failure = outcome.last_failure
        assert failure is not None
        # A reachable endpoint that refuses our keys, or throttles us, is degraded rather than down.
        reachable = failure.kind in (FailureKind.credential, FailureKind.rate_limited, FailureKind.not_found)
        status = HealthStatus.degraded if reachable else HealthStatus.unhealthy
        details.update(error_code=failure.error_code, error_message=failure.message, provider_status=failure.status)
    if len(outcome.failures) > (0 if outcome.models is not None else 1):
        details["attempts"] = outcome.attempts()
    if cooling:
        details["cooldown_seconds"] = round(cooling, 1)
        details.setdefault("reason", f"cooling down for {cooling:.0f} s after the provider throttled or failed calls")

    checked_at = utcnow()
    endpoint.health_status = status.value
    endpoint.last_health_check = checked_at
    await service.commit_and_invalidate(session, runtime.context)
    latency = round(outcome.latency_ms, 1)
    return HealthCheckResult(status=status, latency_ms=latency, checked_at=checked_at, details=details)


_COOLDOWN_KINDS = ("endpoint", "throttled")


async def endpoint_cooldowns(runtime: ModelRuntime, endpoint_ids: list[uuid.UUID]) -> dict[uuid.UUID, float]:
    """Seconds the model runtime keeps each endpoint cooled down (after 429, 503 or connection failures), read in
    one round trip; endpoints not cooling down are left out."""
    state = runtime.state
    await state.load_cooldowns({(kind, endpoint_id) for endpoint_id in endpoint_ids for kind in _COOLDOWN_KINDS})
    cooling: dict[uuid.UUID, float] = {}
    for endpoint_id in endpoint_ids:
        left = [state.cooldown_left(kind, endpoint_id) for kind in _COOLDOWN_KINDS]
        longest = max((x for x in left if x is not None), default=None)
        if longest is not None:
            cooling[endpoint_id] = longest
    return cooling


async def endpoint_cooldown(runtime: ModelRuntime, endpoint_id: uuid.UUID) -> float | None:
    return (await endpoint_cooldowns(runtime, [endpoint_id])).get(endpoint_id)


async def with_cooldowns(runtime: ModelRuntime, endpoints: list[EndpointRead]) -> list[EndpointRead]:
    """The stored endpoints as callers see them now: ``degraded`` while the runtime keeps calls away from one, and
    the state of each one's circuit breaker."""
    ids = [e.id for e in endpoints]
    cooling = await endpoint_cooldowns(runtime, ids)
    circuits = await runtime.state.circuit_states(ids)
    shown = []
    for endpoint in endpoints:
        now: dict[str, Any] = {"circuit_state": circuits[endpoint.id]}
        left = cooling.get(endpoint.id)
        if left is not None:
            down = endpoint.health_status is HealthStatus.unhealthy
            now.update(
                health_status=HealthStatus.unhealthy if down else HealthStatus.degraded,
                cooldown_seconds=round(left, 1),
            )
        shown.append(endpoint.model_copy(update=now))
    return shown


# --------------------------------------------------------------------------------------------- validation


async def validate_credential(
    session: AsyncSession, runtime: ModelRuntime, credential_id: uuid.UUID, *, actor: str
) -> CredentialValidation:
    """The key against the provider's endpoints in failover order: the first endpoint that answers decides."""
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
        opened, undecryptable = _open_all(runtime, [credential])
        if undecryptable:
            _mark_undecryptable(undecryptable)
            result = CredentialValidation(
                valid=False,
                validated_at=now,
                error_code="CREDENTIAL_UNDECRYPTABLE",
                error_message=f"credential {credential.alias!r} cannot be decrypted with the current master keys; "
                "re-enter its keys",
            )
        else:
            endpoints = await _active_endpoints(session, provider)
            if not endpoints:
                raise ConflictError(
                    f"provider {provider.name!r} has no active endpoint to validate against",
                    error_code="NO_ACTIVE_ENDPOINT",
                )
            try:
                outcome = await probe_routes(
                    runtime,
                    adapter_for(provider.type),
                    _routes(endpoints, [credential]),
                    secrets=opened,
                    keep_going=ROUTE_FAILURES,
                )
            except ClientConfigurationError as exc:
                raise _configuration_problem(exc) from None
            result = _validation_outcome(credential, outcome, utcnow())

    audit.record(
        session,
        actor=actor,
        action="validate",
        resource_type="credential",
        resource_id=credential.id,
        details={"valid": result.valid, "error_code": result.error_code},
    )
    await service.commit_and_invalidate(session, runtime.context)
    return result


def _validation_outcome(credential: ProviderCredential, outcome: ProbeOutcome, now: datetime) -> CredentialValidation:
    if outcome.models is not None:
        credential.validation_status = ValidationStatus.valid.value
        credential.last_validated_at = now
        return CredentialValidation(valid=True, validated_at=now)
    failure = outcome.last_failure
    assert failure is not None
    if failure.kind is FailureKind.credential:
        credential.validation_status = ValidationStatus.invalid.value
        credential.last_validated_at = now
    # Any other failure (every endpoint down or throttling) says nothing about the key: its status stays.
    return CredentialValidation(
        valid=False, validated_at=now, error_code=failure.error_code, error_message=outcome.summary()
    )


# --------------------------------------------------------------------------------------------- sync


def _new_model_type(model_id: str) -> str:
    return "embedding" if "embed" in model_id.lower() else "chat"


def _default_capabilities(model_type: str) -> dict[str, Any]:
    if model_type == "embedding":
        return {"embedding": {"supported": True, "score": 3}}
    return {name: {"supported": True, "score": 3} for name in ("chat", "text_generation", "streaming")}


async def _remote_catalogue(session: AsyncSession, runtime: ModelRuntime, provider: Provider) -> list[RemoteModel]:
    """The provider's model list over every route in failover order (offline providers answer themselves)."""
    adapter = adapter_for(provider.type)
    if not adapter.takes_endpoints:
        return await adapter.list_models(None, None)
    endpoints = await _active_endpoints(session, provider)
    if not endpoints:
        raise ConflictError(f"provider {provider.name!r} has no active endpoint", error_code="NO_ACTIVE_ENDPOINT")
    credentials = await service.usable_credentials(session, provider.id)
    if not credentials and adapter.needs_credential:
        raise ConflictError(f"provider {provider.name!r} has no usable credential", error_code="NO_USABLE_CREDENTIAL")
    opened = await _open_usable(session, runtime, provider, credentials)
    try:
        outcome = await probe_routes(
            runtime, adapter, _routes(endpoints, credentials), secrets=opened, keep_going=ANY_KEY_FAILURES
        )
    except ClientConfigurationError as exc:
        raise _configuration_problem(exc) from None
    if outcome.models is None:
        failure = outcome.last_failure
        assert failure is not None
        await service.commit_and_invalidate(session, runtime.context)  # keys found undecryptable stay marked
        raise AppError(
            f"could not read the model list of {provider.name!r}: {outcome.summary()}",
            error_code=failure.error_code,
            status_code=HTTP_STATUS[failure.kind],
            details={"attempts": outcome.attempts()},
        )
    return outcome.models


async def sync_models(
    session: AsyncSession, runtime: ModelRuntime, provider_id: uuid.UUID, *, actor: str
) -> ModelSyncResult:
    provider = await service.get_provider_row(session, provider_id)
    remote = await _remote_catalogue(session, runtime, provider)

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
    await service.commit_and_invalidate(session, runtime.context)
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


async def run_model_test(session: AsyncSession, runtime: ModelRuntime, model_uuid: uuid.UUID) -> ModelTestResult:
    row = await service.get_model_row(session, model_uuid)
    provider = await service.get_provider_row(session, row.provider_id)
    started = time.perf_counter()
    try:
        chat = await runtime.get_chat_model(session, provider.id, row.model_id, {"max_tokens": TEST_MAX_TOKENS})
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
