"""``aiops-executor worker``: a process that only runs executions, taken from the job queue (PostgreSQL).

It serves no API. It runs until SIGTERM or SIGINT, then takes no new run, lets its runs go on for
``AIOPS_WORKER_DRAIN_SECONDS`` and hands the rest back to the queue (another worker resumes them from their
checkpoints). With ``metrics_port`` it serves its Prometheus metrics at ``http://<host>:<port>/metrics`` and its
liveness at ``/health`` (core/liveness.py: 503 when its event loop stalls, its memory is exhausted or the database
stays unreachable), from a thread of its own: a stalled loop cannot keep that answer from being given.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from aiops_executor.core import liveness
from aiops_executor.core.errors import error_body
from aiops_executor.core.listening import CannotListen
from aiops_executor.core.liveness import OK, Liveness, what_failed
from aiops_executor.core.logging import configure_logging
from aiops_executor.core.request_context import REQUEST_ID_HEADER, new_request_id
from aiops_executor.core.settings import ConfigurationError, Settings
from aiops_executor.core.telemetry import Telemetry
from aiops_executor.services import ServiceContext

logger = structlog.get_logger(__name__)


class WorkerRefused(ConfigurationError):
    """This configuration cannot run a separate worker; the message says why, in one line."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Each scrape and health check would be a line on stderr."""


def monitoring_app(registry: CollectorRegistry, watched: Liveness) -> Callable[..., Iterable[bytes]]:
    """``/health`` (the liveness verdict, in the API's format) and, at any other path, the Prometheus metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/health":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        checks = watched.checks()
        failure = what_failed(checks)
        request_id = new_request_id()
        if failure is not None:
            status = "503 Service Unavailable"
            body = error_body("SERVICE_UNAVAILABLE", failure, {"checks": checks})
            body["request_id"] = request_id
        else:
            status, body = "200 OK", {"status": OK, "checks": checks}
        start_response(status, [("Content-Type", "application/json"), (REQUEST_ID_HEADER, request_id)])
        return [json.dumps(body).encode()]

    return app


def serve_monitoring(host: str, port: int, app: Callable[..., Iterable[bytes]]) -> WSGIServer:
    server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-monitoring", daemon=True).start()
    return server


def check_worker_settings(settings: Settings) -> None:
    if not settings.uses_job_queue:
        raise WorkerRefused(
            "a separate worker needs PostgreSQL (AIOPS_DATABASE_URL); "
            "on the embedded SQLite database `aiops-executor serve` runs executions itself"
        )


async def run_worker(settings: Settings, *, metrics_port: int | None = None, metrics_host: str = "0.0.0.0") -> None:  # noqa: S104
    check_worker_settings(settings)
    configure_logging(settings)
    settings = settings.model_copy(update={"embedded_worker": True})
    telemetry = Telemetry.from_settings(settings)
    context = ServiceContext.build(settings, telemetry)
    manager = context.executions
    telemetry.metrics.watch(active_executions=manager.running_count, sse_subscribers=lambda: 0)
    if metrics_port is not None:
        try:
            serve_monitoring(metrics_host, metrics_port, monitoring_app(telemetry.metrics.registry, context.liveness))
        except OSError as exc:
            raise CannotListen(metrics_host, metrics_port, exc, option="--metrics-port") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher: asyncio.Task[None] | None = None
    try:
        await context.open()
        await manager.start()
        watcher = asyncio.create_task(context.liveness.run(), name="liveness")
        logger.info("worker started", worker_id=manager.worker_id, concurrency=settings.worker_concurrency)
        await stop.wait()
        logger.info("worker stopping: no new runs; draining", drain_seconds=settings.worker_drain_seconds)
    finally:
        await liveness.stop(watcher)
        await manager.stop()
        await context.close()
    logger.info("worker stopped")
