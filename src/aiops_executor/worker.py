"""``aiops-executor worker``: a process that only runs executions, taken from the job queue (PostgreSQL).

It serves no API. It runs until SIGTERM or SIGINT, then takes no new run, lets its runs go on for
``AIOPS_WORKER_DRAIN_SECONDS`` and hands the rest back to the queue (another worker resumes them from their
checkpoints). With ``metrics_port`` it serves its Prometheus metrics at ``http://<host>:<port>/metrics``.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import start_http_server

from aiops_executor.core.listening import CannotListen
from aiops_executor.core.logging import configure_logging
from aiops_executor.core.settings import ConfigurationError, Settings
from aiops_executor.core.telemetry import Telemetry
from aiops_executor.services import ServiceContext

logger = structlog.get_logger(__name__)


class WorkerRefused(ConfigurationError):
    """This configuration cannot run a separate worker; the message says why, in one line."""


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
            start_http_server(metrics_port, addr=metrics_host, registry=telemetry.metrics.registry)
        except OSError as exc:
            raise CannotListen(metrics_host, metrics_port, exc, option="--metrics-port") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await context.open()
        await manager.start()
        logger.info("worker started", worker_id=manager.worker_id, concurrency=settings.worker_concurrency)
        await stop.wait()
        logger.info("worker stopping: no new runs; draining", drain_seconds=settings.worker_drain_seconds)
    finally:
        await manager.stop()
        await context.close()
    logger.info("worker stopped")
