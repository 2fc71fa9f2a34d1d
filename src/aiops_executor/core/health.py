"""Liveness and readiness (open routes): ``GET /health`` (``core/liveness.py`` says what it judges) and
``GET /health/ready``.

Readiness checks the database and, when ``AIOPS_REDIS_URL`` is set, Redis; both at once, each within
``AIOPS_READINESS_TIMEOUT_SECONDS``. A failed check answers 503 with the contract's error body, whose
``details.checks`` says which dependency failed. Failure reasons are logged (type only), never answered.
With a job queue (PostgreSQL) the answer also says how many runs wait in it and how many workers are live
(``queue``: ``null`` when it could not be read); no live worker does not make the API unready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as redis
import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from aiops_executor import __version__
from aiops_executor.core.context import AppContext
from aiops_executor.core.deps import ContextDep
from aiops_executor.core.http_errors import error_response
from aiops_executor.core.liveness import what_failed
from aiops_executor.core.openapi import errors

OK = "ok"
UNREACHABLE = "unreachable"

logger = structlog.get_logger(__name__)
router = APIRouter(tags=["health"])


async def _redis(url: str, socket_seconds: float) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=socket_seconds, socket_timeout=socket_seconds)
    try:
        if not await client.ping():
            raise ConnectionError("Redis did not answer PING")
    finally:
        await client.aclose()


async def _check(name: str, probe: Coroutine[Any, Any, None], limit_seconds: float) -> str:
    try:
        async with asyncio.timeout(limit_seconds):
            await probe
    except Exception as exc:
        logger.warning("readiness check failed", dependency=name, error=type(exc).__name__)
        return UNREACHABLE
    return OK


async def readiness_checks(context: AppContext) -> dict[str, str]:
    """``{"database": "ok"|"unreachable", "redis": ...}`` (Redis only when configured)."""
    timeout = context.settings.readiness_timeout_seconds
    probes = {"database": context.ping_database()}
    if context.settings.redis_url:
        probes["redis"] = _redis(context.settings.redis_url, timeout)
    results = await asyncio.gather(*(_check(name, probe, timeout) for name, probe in probes.items()))
    return dict(zip(probes, results, strict=True))


@router.get(
    "/health",
    operation_id="getLiveness",
    summary="Liveness",
    description="Whether this process can still serve (restart it when not): 503 when its event loop stalls "
    "beyond AIOPS_LIVENESS_MAX_LOOP_LAG_SECONDS, its memory is exhausted (a MemoryError, or resident memory above "
    "AIOPS_LIVENESS_MEMORY_LIMIT_MB), or the database has been unreachable for longer than "
    "AIOPS_LIVENESS_DATABASE_GRACE_SECONDS; `checks` says which. Waits on no dependency.",
    responses=errors({503: {"SERVICE_UNAVAILABLE": "the process cannot serve; details.checks says why"}}),
)
async def liveness(context: ContextDep) -> JSONResponse:
    checks = context.liveness.checks()
    failure = what_failed(checks)
    if failure is not None:
        return error_response(503, "SERVICE_UNAVAILABLE", failure, {"checks": checks})
    return JSONResponse({"status": OK, "version": __version__, "checks": checks})


@router.get(
    "/health/ready",
    operation_id="getReadiness",
    summary="Readiness",
    description="Checks the database and, when configured, Redis (each within AIOPS_READINESS_TIMEOUT_SECONDS). "
    "With a job queue the answer also carries `queue` (`depth`, `live_workers`; null when unreadable).",
    responses=errors({503: {"SERVICE_UNAVAILABLE": "a dependency is not reachable; details.checks says which"}}),
)
async def readiness(context: ContextDep) -> JSONResponse:
    checks = await readiness_checks(context)
    failed = [name for name, state in checks.items() if state != OK]
    if failed:
        verb = "is" if len(failed) == 1 else "are"
        return error_response(
            503, "SERVICE_UNAVAILABLE", f"{' and '.join(failed)} {verb} not reachable", {"checks": checks}
        )
    body: dict[str, Any] = {"status": OK, "checks": checks}
    try:
        async with asyncio.timeout(context.settings.readiness_timeout_seconds):
            queue = await context.queue_status()
    except Exception as exc:
        logger.warning("could not read the job queue", error=type(exc).__name__)
        body["queue"] = None
    else:
        if queue is not None:
            body["queue"] = queue
    return JSONResponse(body)
