"""Liveness (``GET /health``, core/liveness.py): it fails when the process cannot serve -- its event loop stalled,
its memory exhausted, the database unreachable past the grace period -- and recovers with the process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from aiops_executor import __version__
from aiops_executor.core.db import Database
from aiops_executor.core.liveness import Liveness
from aiops_executor.worker import monitoring_app, serve_monitoring
from tests.core.test_health import _context, serving
from tests.helpers import assert_error

# The watcher ticks every 50 ms here (1 s by default). The loop's lag is judged only in the test about it: on a
# loaded machine a lag of a few hundred milliseconds is real (logging a traceback took 0.5 s beside the suite).
FAST = {"liveness_tick_seconds": 0.05, "liveness_max_loop_lag_seconds": 0}
STALL_SECONDS = 1.0
ALL_OK = {"event_loop": "ok", "memory": "ok", "database": "ok"}


async def _until(client: httpx.AsyncClient, done: Callable[[httpx.Response], bool], seconds: float) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get("/health")
        if done(response) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


def _block_the_event_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a synchronous call on the loop does to every request and run of the process


async def test_a_live_process_says_so_with_its_checks(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, **FAST) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "checks": ALL_OK}


async def test_a_stalled_event_loop_fails_liveness_until_it_runs_again(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, **{**FAST, "liveness_max_loop_lag_seconds": STALL_SECONDS}) as client:
        assert (await _until(client, lambda r: r.status_code == 200, 5)).status_code == 200
        _block_the_event_loop(2 * STALL_SECONDS)
        stalled = await client.get("/health")
        body = assert_error(stalled, 503, "SERVICE_UNAVAILABLE")
        assert body["details"] == {"checks": {**ALL_OK, "event_loop": "stalled"}}
        assert body["error_message"] == "the event loop is stalled"
        recovered = await _until(client, lambda r: r.status_code == 200, 5)
    assert recovered.status_code == 200, recovered.text


async def test_a_memory_error_fails_liveness_for_good(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, **FAST) as client:
        app: FastAPI = client.app  # type: ignore[attr-defined]

        async def exhausting() -> None:
            raise MemoryError

        app.add_api_route("/exhausting", exhausting)
        assert_error(await client.get("/exhausting"), 500, "INTERNAL_ERROR")
        for _ in range(2):  # it does not come back: the process is in an unknown state
            body = assert_error(await client.get("/health"), 503, "SERVICE_UNAVAILABLE")
            assert body["details"] == {"checks": {**ALL_OK, "memory": "exhausted"}}
            await asyncio.sleep(0.1)


async def test_resident_memory_above_the_limit_fails_liveness(database_url: str, tmp_path: Path) -> None:
    async with serving(database_url, tmp_path, liveness_memory_limit_mb=1, **FAST) as client:
        body = assert_error(await client.get("/health"), 503, "SERVICE_UNAVAILABLE")
    assert body["details"] == {"checks": {**ALL_OK, "memory": "exhausted"}}
    assert body["error_message"] == "the process's memory is exhausted"
    async with serving(database_url, tmp_path, liveness_memory_limit_mb=0, **FAST) as client:
        assert (await client.get("/health")).status_code == 200  # 0: no limit


async def test_a_database_unreachable_past_the_grace_fails_liveness(database_url: str, tmp_path: Path) -> None:
    settings = {**FAST, "liveness_database_probe_seconds": 0.05, "liveness_database_grace_seconds": 0.5}
    async with serving(database_url, tmp_path, **settings) as client:
        context = _context(client)
        original = context.database
        context.database = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        try:
            failed = await _until(client, lambda r: r.status_code == 503, 10)
        finally:
            await context.database.dispose()
            context.database = original
        recovered = await _until(client, lambda r: r.status_code == 200, 10)
    body = assert_error(failed, 503, "SERVICE_UNAVAILABLE")
    assert body["details"] == {"checks": {**ALL_OK, "database": "unreachable"}}
    assert "127.0.0.1:1" not in failed.text
    assert recovered.status_code == 200, recovered.text


async def test_an_outage_shorter_than_the_grace_does_not_fail_liveness() -> None:
    failing = True
    probed = asyncio.Event()

    async def probe() -> None:
        probed.set()  # the watcher records the outcome before it next yields
        if failing:
            raise ConnectionRefusedError

    liveness = Liveness(
        tick_seconds=0.02,
        max_loop_lag_seconds=0,
        memory_limit_bytes=None,
        database_probe=probe,
        database_probe_seconds=0.02,
        database_grace_seconds=60,
        database_timeout_seconds=1,
    )
    watcher = asyncio.create_task(liveness.run())
    try:
        await asyncio.wait_for(probed.wait(), 5)
        await asyncio.sleep(0)
        assert liveness.database_failing_since is not None
        assert liveness.checks()["database"] == "ok"  # failing, but for less than the grace
        failing = False
        probed.clear()
        await asyncio.wait_for(probed.wait(), 5)
        await asyncio.sleep(0)
    finally:
        watcher.cancel()
    assert liveness.database_failing_since is None
    assert liveness.checks() == ALL_OK


def _stall_then_ask(url: str, seconds: float) -> httpx.Response:
    """Blocks the event loop, then asks while it is still blocked (by this very call)."""
    _block_the_event_loop(seconds)
    return httpx.get(url, trust_env=False)


async def test_a_workers_monitoring_port_tells_of_a_stalled_loop_while_it_is_stalled() -> None:
    """A worker serves no API: its /health is on its metrics port, answered from a thread of its own, so that a
    blocked loop is reported (503) rather than leaving the health check to time out."""

    async def database_answers() -> None:
        return None

    watched = Liveness(
        tick_seconds=0.05,
        max_loop_lag_seconds=0.2,
        memory_limit_bytes=None,
        database_probe=database_answers,
        database_probe_seconds=10,
        database_grace_seconds=60,
        database_timeout_seconds=1,
    )
    server = serve_monitoring("127.0.0.1", 0, monitoring_app(CollectorRegistry(), watched))
    url = f"http://127.0.0.1:{server.server_address[1]}"
    watcher = asyncio.create_task(watched.run())
    try:
        await asyncio.sleep(0.2)
        live = await asyncio.to_thread(httpx.get, f"{url}/health", trust_env=False)
        assert live.status_code == 200 and live.json() == {"status": "ok", "checks": ALL_OK}
        stalled = _stall_then_ask(f"{url}/health", 0.6)
        body = assert_error(stalled, 503, "SERVICE_UNAVAILABLE")
        assert body["details"] == {"checks": {**ALL_OK, "event_loop": "stalled"}}
        assert body["error_message"] == "the event loop is stalled"  # as the API words it
        metrics = await asyncio.to_thread(httpx.get, f"{url}/metrics", trust_env=False)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    finally:
        watcher.cancel()
        server.shutdown()
        server.server_close()


async def test_the_database_probe_takes_no_write_lock_on_sqlite(tmp_path: Path) -> None:
    """Every transaction on the embedded database takes SQLite's write lock (BEGIN IMMEDIATE); the probe of
    /health and /health/ready must not, or it would wait behind a run's writes and hold them up."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"
    writer, prober = Database(url), Database(url)
    try:
        async with writer.engine.connect() as holding:
            await holding.execute(text("CREATE TABLE held (n INTEGER)"))
            await holding.commit()
            await holding.execute(text("INSERT INTO held VALUES (1)"))  # the write lock, held from here on
            async with asyncio.timeout(5):  # the busy timeout is 30 s
                await prober.probe()
            await holding.rollback()
    finally:
        await writer.dispose()
        await prober.dispose()
