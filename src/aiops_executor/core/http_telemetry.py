"""HTTP metrics and server spans (an ASGI middleware), and ``GET /metrics``.

Requests are labelled by their route template (``/api/v1/teams/{team_id}``), never the raw path, so the
number of series stays bounded; a path no route matches counts as ``<unmatched>``. The server span continues
a caller's W3C ``traceparent`` when one is sent. ``/metrics`` itself is counted but not traced (scrapes would
flood the traces).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiops_executor.core import tracing
from aiops_executor.core.metrics import UNMATCHED_ROUTE, Metrics
from aiops_executor.core.request_context import current_request_id
from aiops_executor.core.telemetry import Telemetry

METRICS_PATH = "/metrics"
logger = structlog.get_logger(__name__)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request (the router records the route in the scope).

    Recent FastAPI versions record the route as its own router declared it, without the prefixes of the
    routers that include it (``/api/v1``): those are the leading segments of the path that the template does
    not cover. They are literal segments a router matched, so they stay as few as the routers are.
    """
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    path: str = scope["path"]
    missing = path.count("/") - template.count("/")
    if missing > 0 and ":path}" not in template:
        template = "/".join(path.split("/")[: missing + 1]) + template
    return template


class _HeaderGetter(Getter[Scope]):
    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier.get("headers", []) if k.lower() == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier.get("headers", [])]


_HEADERS = _HeaderGetter()


class TelemetryMiddleware:
    """Counts and times every HTTP request; traces it when tracing is on. Sits inside the request-id middleware,
    so an unhandled error is seen here as it propagates (and counted as a 500)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        tracer = self.telemetry.tracer
        if tracer is None or scope["path"] == METRICS_PATH:
            try:
                await self.app(scope, receive, send_status)
            finally:
                self._count(scope, method, status, started)
            return

        with tracer.start_as_current_span(
            method,
            context=propagate.extract(scope, getter=_HEADERS),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = self._count(scope, method, status, started)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                request_id = current_request_id()
                if request_id:
                    span.set_attribute(tracing.REQUEST_ID, request_id)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)

    def _count(self, scope: Scope, method: str, status: int, started: float) -> str:
        route = route_template(scope)
        self.telemetry.metrics.http_request(method, route, status, time.perf_counter() - started)
        return route


router = APIRouter()


QUEUE_READ_SECONDS = 1.0


@router.get(METRICS_PATH, include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text format, or OpenMetrics with exemplars for a scraper that asks; open, like ``/health``.
    The job queue's depth and live workers are read now, within a second (a slow database leaves them as
    last read rather than stalling the scrape)."""
    metrics: Metrics = request.app.state.telemetry.metrics
    context = getattr(request.app.state, "context", None)
    if context is not None:
        try:
            async with asyncio.timeout(QUEUE_READ_SECONDS):
                metrics.queue(await context.queue_status())
        except Exception as exc:
            logger.warning("could not read the job queue for /metrics", error=type(exc).__name__)
    body, content_type = metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})
