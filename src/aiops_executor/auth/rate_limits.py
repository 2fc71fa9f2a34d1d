"""Rate limits as FastAPI dependencies.

An authenticated limit wraps the route's one ``RoleGuard`` (it depends on it, and returns its principal), so
the caller is known before its bucket is charged and every route still has exactly one guard. Sign-in is
limited per client address, before the form is even checked.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import Depends, Request

from aiops_executor.auth.dependencies import RoleGuard
from aiops_executor.auth.models import Role
from aiops_executor.auth.principal import Principal
from aiops_executor.core.deps import ContextDep
from aiops_executor.core.openapi import documented_error
from aiops_executor.core.rate_limit import RateLimitedError

logger = structlog.get_logger(__name__)

_operator = RoleGuard(Role.operator)

# Documents the 429 answer (the contract's error body, and Retry-After) on every limited route.
RATE_LIMITED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {
        **documented_error(429, {"RATE_LIMITED": "too many requests; retry after Retry-After seconds"}),
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    }
}


def client_address(request: Request) -> str:
    """The peer address (behind a proxy, run uvicorn with ``--proxy-headers`` so this is the client's)."""
    return request.client.host if request.client else "unknown"


async def limit_executions(principal: Annotated[Principal, Depends(_operator)], context: ContextDep) -> Principal:
    """Operator access to the routes that start, cancel or compute runs, charged per API key or user."""
    decision = await context.rate_limits.executions.take(f"{principal.kind}:{principal.id}")
    if not decision.allowed:
        logger.info("rate limited", scope="executions", principal=principal.actor)
        raise RateLimitedError(
            f"too many execution requests; at most {context.rate_limits.executions.limit} per minute",
            decision.retry_after,
            scope="executions",
        )
    return principal


async def limit_auth(request: Request, context: ContextDep) -> str:
    """Sign-in requests per client address; returns the address."""
    address = client_address(request)
    decision = await context.rate_limits.auth.take(address)
    if not decision.allowed:
        logger.info("rate limited", scope="auth", client=address)
        raise RateLimitedError(
            f"too many sign-in requests; at most {context.rate_limits.auth.limit} per minute",
            decision.retry_after,
            scope="auth",
        )
    return address


ExecutionOperatorDep = Annotated[Principal, Depends(limit_executions)]
AuthClientDep = Annotated[str, Depends(limit_auth)]
