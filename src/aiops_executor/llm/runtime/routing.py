"""The order a call tries routes in, and what a failure cools down so that the next calls go elsewhere."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.runtime.config import CredentialConfig, ModelBinding
from aiops_executor.llm.runtime.errors import Failure, FailureKind, NoUsableRouteError
from aiops_executor.llm.runtime.routes import Route, route_key
from aiops_executor.llm.runtime.state import RuntimeState


def credential_usable(credential: CredentialConfig, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    if credential.expires_at is not None and credential.expires_at <= now:
        return False
    return credential.quota_limit is None or credential.quota_used < credential.quota_limit


def plan_routes(binding: ModelBinding, state: RuntimeState, now: datetime | None = None) -> list[Route]:
    """Every route in preference order: routes not cooling down first, each group by health and priority."""
    adapter = adapter_for(binding.model.provider_type)
    if not adapter.takes_endpoints:
        return [Route(None, None)]
    endpoints = sorted(binding.endpoints, key=endpoint_preference)
    credentials = [c for c in binding.credentials if credential_usable(c, now) and not state.is_exhausted(c)]
    if adapter.needs_credential and not credentials:
        raise NoUsableRouteError(
            f"provider {binding.model.provider_name!r} has no usable credential (active, unexpired, within quota)",
            details={"provider": binding.model.provider_name},
        )
    options: list[CredentialConfig | None] = list(credentials) if credentials else [None]
    routes = [Route(endpoint, credential) for endpoint in endpoints for credential in options]
    if not routes:
        raise NoUsableRouteError(
            f"provider {binding.model.provider_name!r} has no active endpoint",
            details={"provider": binding.model.provider_name},
        )
    return cooling_last(routes, state)


class RankedEndpoint(Protocol):
    @property
    def health_status(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def is_default(self) -> bool: ...


def endpoint_preference(endpoint: RankedEndpoint) -> tuple[bool, int, bool]:
    """Failover order: endpoints not known to be down first, then by priority, the default first among equals."""
    return (endpoint.health_status == "unhealthy", endpoint.priority, not endpoint.is_default)


def cooling_last(routes: list[Route], state: RuntimeState) -> list[Route]:
    """The routes in their order, those cooling down moved to the end (soonest free first)."""
    ready = [r for r in routes if not state.cooling_until(r)]
    cooling = sorted((r for r in routes if state.cooling_until(r)), key=state.cooling_until)
    return ready + cooling


# A 500, or an error inside a stream that had begun, is often about the request (llama.cpp answers a request
# form it does not support with a 500): the call fails over, but the endpoint is not cooled down for it.
REQUEST_SPECIFIC_STATUSES = frozenset({500, None})


def endpoint_down(failure: Failure) -> bool:
    """The endpoint is dead or overloaded: unreachable (refused, timed out), or a 5xx not about the request."""
    return failure.kind is FailureKind.unreachable or (
        failure.kind is FailureKind.server and failure.status not in REQUEST_SPECIFIC_STATUSES
    )


def endpoint_failed(failure: Failure) -> bool:
    """The failure says something about the endpoint (down, overloaded or throttling: what its circuit breaker
    counts), not about the request or a key."""
    return endpoint_down(failure) or failure.kind is FailureKind.rate_limited


async def penalise(state: RuntimeState, route: Route, failure: Failure) -> None:
    """Cools down what failed, so the next calls try other routes first: a dead or overloaded endpoint (502,
    503, 504 and their Retry-After), a refused key, an endpoint throttling one key (429 and its Retry-After).
    A rejected request says nothing about the route."""
    if route.endpoint and endpoint_down(failure):
        await state.share_cool_down("endpoint", route.endpoint.id, failure.retry_after)
    elif failure.kind is FailureKind.credential and route.credential:
        await state.share_cool_down("credential", route.credential.id)
    elif failure.kind is FailureKind.rate_limited:
        if route.endpoint and route.credential:
            await state.share_cool_down("route", route_key(route.endpoint.id, route.credential.id), failure.retry_after)
        elif route.endpoint:
            await state.share_cool_down("endpoint", route.endpoint.id, failure.retry_after)
        if route.endpoint:  # shown as degraded in the endpoint's health; routing uses the route's cool-down
            await state.share_cool_down("throttled", route.endpoint.id, failure.retry_after)


def rejected_earlier(route: Route, failures: list[tuple[Route, Failure]]) -> bool:
    """A key the provider refused during this call is not offered again in a retry round."""
    return route.credential is not None and any(
        failed.credential is not None
        and failed.credential.id == route.credential.id
        and f.kind is FailureKind.credential
        for failed, f in failures
    )
