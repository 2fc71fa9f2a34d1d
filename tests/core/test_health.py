"""Liveness and readiness: the database always, the real local Redis when configured."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from aiops_executor import __version__
from aiops_executor.app import create_app
from aiops_executor.core.context import AppContext
from aiops_executor.core.db import Database
from aiops_executor.services import ServiceContext
from tests.conftest import make_settings
from tests.helpers import assert_error

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


@asynccontextmanager
async def serving(database_url: str, data_dir: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, data_dir / uuid.uuid4().hex, **overrides))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]  # for the tests that reach into the context
            yield client


def _context(client: httpx.AsyncClient) -> AppContext:
    context: AppContext = client.app.state.context  # type: ignore[attr-defined]
    return context


async def test_liveness_is_open(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, redis_url=UNREACHABLE_REDIS_URL) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    # Liveness does not depend on Redis.
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "checks": {"event_loop": "ok", "memory": "ok", "database": "ok"},
    }


def _queue(backend: str) -> dict[str, Any]:
    """On PostgreSQL runs wait in the job queue: its depth and live workers (this app's embedded worker)."""
    return {"queue": {"depth": 0, "live_workers": 1}} if backend == "postgresql" else {}


async def test_ready_without_redis_checks_the_database(backend: str, database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, redis_url=None) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}, **_queue(backend)}


async def test_ready_with_the_real_redis(backend: str, database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, redis_url=REDIS_URL) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}, **_queue(backend)}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_ready_reports_waiting_runs_and_live_workers(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, redis_url=None, embedded_worker=False) as client:
        context = _context(client)
        assert isinstance(context, ServiceContext) and context.executions.queue is not None
        queue = context.executions.queue
        await queue.enqueue(uuid.uuid4())
        try:
            response = await client.get("/health/ready")
        finally:
            await queue.app.connector.execute_query_async("DELETE FROM procrastinate_jobs")
    assert response.status_code == 200
    # An API process without a worker: a run waits, and no worker is live (the API is still ready).
    assert response.json()["queue"] == {"depth": 1, "live_workers": 0}


async def test_not_ready_when_redis_is_unreachable(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, redis_url=UNREACHABLE_REDIS_URL) as client:
        response = await client.get("/health/ready")
    body = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert body["details"] == {"checks": {"database": "ok", "redis": "unreachable"}}
    assert body["error_message"] == "redis is not reachable"
    assert "127.0.0.1:1" not in response.text


async def test_a_redis_that_never_answers_times_out(database_url: str, tmp_path: Path) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with serving(
            database_url, tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", readiness_timeout_seconds=0.3
        ) as client:
            started = time.perf_counter()
            response = await client.get("/health/ready")
            elapsed = time.perf_counter() - started
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    body = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert body["details"]["checks"] == {"database": "ok", "redis": "unreachable"}
    assert connections, "the probe reached the silent server"
    assert elapsed < 2.0


async def test_not_ready_when_both_are_gone(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, redis_url=UNREACHABLE_REDIS_URL) as client:
        context = _context(client)
        original = context.database
        context.database = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        try:
            response = await client.get("/health/ready")
        finally:
            await context.database.dispose()
            context.database = original
    body = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert body["details"] == {"checks": {"database": "unreachable", "redis": "unreachable"}}
    assert body["error_message"] == "database and redis are not reachable"
