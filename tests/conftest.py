"""Shared fixtures. API and data-layer tests run against both SQLite and the real local PostgreSQL.

Each test session creates its own PostgreSQL database (and drops it at the end) and its own SQLite file;
both are migrated once with Alembic, and every test starts from empty tables.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import create_async_engine

from aiops_executor.app import create_app
from aiops_executor.core.migrate import upgrade_url
from aiops_executor.core.settings import Settings
from aiops_executor.executions.checkpoints import Checkpoints, setup_checkpoints
from aiops_executor.models_registry import metadata
from aiops_executor.services import ServiceContext

PG_HOST = os.environ.get("AIOPS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AIOPS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AIOPS_TEST_PG_USER", "postgres")

TEST_MASTER_KEY = base64.b64encode(b"k" * 32).decode()
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-1"

BACKENDS = ["sqlite", "postgresql"]
# Argon2 at its lowest cost: at the default cost, hashing and checking passwords took most of every test's
# sign-in. Production refuses these values (tests/core/test_settings.py).
FAST_PASSWORD_HASHING = {"password_hash_time_cost": 1, "password_hash_memory_kib": 64}


def fast_hashing_env(env: str = "dev") -> dict[str, str]:
    """The environment variables of FAST_PASSWORD_HASHING, for a test's subprocess (none for production)."""
    if env == "prod":
        return {}
    return {f"AIOPS_{name.upper()}": str(value) for name, value in FAST_PASSWORD_HASHING.items()}


pytest_plugins = ["tests.mock_providers"]


async def _pg_admin() -> asyncpg.Connection:
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")


LOCAL_NAMES = {"localhost": ["127.0.0.1", "::1"]}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``long`` go first (each worker collects the same order, so they spread over the parallel
    workers): started last, one of them would leave the run waiting on a single worker."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def _no_outside_name_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The egress policy resolves every name it checks; in tests only ``localhost`` resolves, so that no test
    sends a DNS query off this machine (endpoints named ``api.example.com`` just do not resolve). Tests that need
    names stub them themselves (tests/core/test_egress.py)."""
    from aiops_executor.core import egress

    def lookup(host: str) -> list[str]:
        if host not in LOCAL_NAMES:
            raise OSError(f"{host}: tests resolve only localhost")
        return LOCAL_NAMES[host]

    async def resolve(host: str, port: int | None) -> list[str]:
        return lookup(host)

    monkeypatch.setattr(egress, "resolver", resolve)
    monkeypatch.setattr(egress, "sync_resolver", lambda host, port: lookup(host))


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    name = f"aiops_test_{uuid.uuid4().hex[:12]}"
    conn = await _pg_admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    await upgrade_url(url)
    await setup_checkpoints(url)
    yield url
    conn = await _pg_admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "aiops.db"
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade_url(url)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, postgres_url: str, sqlite_url: str) -> AsyncIterator[str]:
    url = postgres_url if backend == "postgresql" else sqlite_url
    yield url
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for table in reversed(metadata.sorted_tables):
                await connection.execute(delete(table))
            if backend == "postgresql":  # the job queue's leftovers (jobs of runs deleted above)
                await connection.execute(text("DELETE FROM procrastinate_jobs"))
    finally:
        await engine.dispose()


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "dev",
        "data_dir": data_dir,
        "database_url": database_url,
        "master_keys": {"test-1": TEST_MASTER_KEY},
        "master_key_id": "test-1",
        "jwt_secret": "test-jwt-secret-" + "x" * 32,
        "admin_username": ADMIN_USERNAME,
        "admin_password": ADMIN_PASSWORD,
        "log_format": "json",
        "seed_simulator": False,
        # A test app that stops suspends its runs at once (on PostgreSQL its worker would otherwise let them go
        # on for 30 s, calling the session's mock servers while later tests run).
        "worker_drain_seconds": 0,
        # The tests' MCP server is a Python process importing the MCP SDK: on a loaded 2-core machine it once took
        # more than the default 15 s to answer its handshake. No test is about that timeout.
        "tool_server_connect_timeout_seconds": 60,
    }
    if overrides.get("env", "dev") != "prod":
        values.update(FAST_PASSWORD_HASHING)
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type, call-arg]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def context(app: FastAPI) -> ServiceContext:
    ctx: ServiceContext = app.state.context
    return ctx


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, ADMIN_USERNAME, ADMIN_PASSWORD)


RoleHeaders = Callable[[str], Awaitable[dict[str, str]]]


@pytest.fixture
def role_headers(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> RoleHeaders:
    """Returns a function giving JWT headers for a fresh user of the given role."""
    cache: dict[str, dict[str, str]] = {"admin": admin_headers}

    async def _headers(role: str) -> dict[str, str]:
        if role not in cache:
            username = f"{role}-{uuid.uuid4().hex[:8]}"
            password = "password-" + uuid.uuid4().hex
            created = await client.post(
                "/api/v1/users", json={"username": username, "password": password, "role": role}, headers=admin_headers
            )
            assert created.status_code == 201, created.text
            cache[role] = await login(client, username, password)
        return cache[role]

    return _headers


CHECKPOINTERS = ["memory", "sqlite", "postgres"]


@pytest.fixture(scope="session")
async def sqlite_checkpoints(sqlite_url: str) -> AsyncIterator[Checkpoints]:
    checkpoints = Checkpoints(sqlite_url)
    await checkpoints.open()
    yield checkpoints
    await checkpoints.close()


@pytest.fixture(scope="session")
async def postgres_checkpoints(postgres_url: str) -> AsyncIterator[Checkpoints]:
    checkpoints = Checkpoints(postgres_url)
    await checkpoints.open()
    yield checkpoints
    await checkpoints.close()


@pytest.fixture(params=CHECKPOINTERS)
def checkpointer(request: pytest.FixtureRequest) -> BaseCheckpointSaver[Any]:
    """Engine tests run on each checkpointer, as LangGraph's own tests do."""
    if request.param == "memory":
        return InMemorySaver()
    checkpoints: Checkpoints = request.getfixturevalue(f"{request.param}_checkpoints")
    return checkpoints.saver
