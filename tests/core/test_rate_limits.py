"""Rate limits on execution routes and sign-in, and sign-in throttling. Time is moved, never slept."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from aiops_executor.app import create_app
from aiops_executor.core.context import AppContext
from aiops_executor.core.rate_limit import FailureLock, TokenBucket
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, make_settings
from tests.helpers import API, assert_error

LIMITED_ROUTES = [
    ("POST", "/teams/{id}/execute"),
    ("POST", "/teams/{id}/executions"),
    ("POST", "/executions/{id}/cancel"),
    ("POST", "/teams/{id}/structured-output"),
]


# The limiters keep no state in the database: beyond the first API test, one backend is enough.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------------------------------- primitives


def test_token_bucket_allows_a_burst_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3, 60.0, clock=clock)
    assert [bucket.hit("a").allowed for _ in range(3)] == [True, True, True]
    refused = bucket.hit("a")
    assert not refused.allowed and refused.retry_after == pytest.approx(20.0)
    assert bucket.hit("b").allowed  # keys are independent
    clock.advance(19.9)
    assert not bucket.hit("a").allowed
    clock.advance(0.1)
    assert bucket.hit("a").allowed and not bucket.hit("a").allowed
    clock.advance(3600)
    assert [bucket.hit("a").allowed for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_zero_disables_a_limiter() -> None:
    bucket = TokenBucket(0, clock=FakeClock())
    assert all(bucket.hit("a").allowed for _ in range(1000)) and len(bucket) == 0
    lock = FailureLock(0, 60, 60, clock=FakeClock())
    assert not any(lock.fail("a") for _ in range(100)) and lock.wait_for("a") == 0


def test_failure_lock_counts_within_the_window_and_attempts_in_flight() -> None:
    clock = FakeClock()
    lock = FailureLock(3, window=60, lockout=300, clock=clock)
    assert not lock.fail("u") and not lock.fail("u")
    clock.advance(61)  # the first two failures left the window
    assert not lock.fail("u") and not lock.fail("u") and lock.wait_for("u") == 0
    assert lock.fail("u")
    assert lock.wait_for("u") == pytest.approx(300)
    clock.advance(300)
    assert lock.wait_for("u") == 0
    # Concurrent attempts whose outcome is pending count: the third is refused before any has failed.
    lock.begin("v")
    lock.begin("v")
    assert lock.wait_for("v") == 0
    lock.begin("v")
    assert lock.wait_for("v") > 0
    for _ in range(3):
        lock.end("v")
    assert lock.wait_for("v") == 0


# ------------------------------------------------------------------------------------------------ API


@dataclass
class Service:
    app: FastAPI
    clock: FakeClock

    def client(self, address: str = "127.0.0.1") -> httpx.AsyncClient:
        """A client calling from ``address``."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://test")


Starter = Callable[..., AbstractAsyncContextManager[Service]]


@pytest.fixture
def running(database_url: str, tmp_path: Path) -> Starter:
    """Starts an app with these settings whose rate limits read a fake clock."""

    @asynccontextmanager
    async def _running(**overrides: Any) -> AsyncIterator[Service]:
        app = create_app(make_settings(database_url, tmp_path / uuid.uuid4().hex, **overrides))
        async with LifespanManager(app):
            context: AppContext = app.state.context
            clock = FakeClock()
            context.rate_limits.clock = clock
            yield Service(app, clock)

    return _running


async def token(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/auth/token", data={"username": username, "password": password})


async def bearer(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await token(client, username, password)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def add_user(client: httpx.AsyncClient, admin: dict[str, str], role: str) -> tuple[str, str]:
    username, password = f"{role}-{uuid.uuid4().hex[:6]}", "pw-" + uuid.uuid4().hex
    created = await client.post(
        f"{API}/users", json={"username": username, "password": password, "role": role}, headers=admin
    )
    assert created.status_code == 201, created.text
    return username, password


def assert_rate_limited(response: httpx.Response, scope: str, retry_after: int) -> None:
    body = assert_error(response, 429, "RATE_LIMITED")
    assert response.headers["retry-after"] == str(retry_after)
    assert body["details"] == {"scope": scope, "retry_after_seconds": retry_after}


async def test_execution_routes_are_limited_per_caller(running: Starter) -> None:
    async with running(rate_limit_executions_per_minute=3) as service, service.client() as client:
        admin = await bearer(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        operator = await bearer(client, *await add_user(client, admin, "operator"))
        key = await client.post(f"{API}/api-keys", json={"name": "ci", "role": "operator"}, headers=admin)
        machine = {"Authorization": f"Bearer {key.json()['key']}"}
        missing = uuid.uuid4()

        # The bucket is shared by the limited routes; a request counts whatever its answer (404 here).
        for method, path in LIMITED_ROUTES[:3]:
            response = await client.request(method, f"{API}{path.format(id=missing)}", json={}, headers=operator)
            assert response.status_code in (404, 422), response.text
        for method, path in LIMITED_ROUTES:
            response = await client.request(method, f"{API}{path.format(id=missing)}", json={}, headers=operator)
            assert_rate_limited(response, "executions", 20)  # 3 per minute: one more every 20 s

        # Other callers (another user, an API key) and unlimited routes are unaffected.
        cancel = f"{API}/executions/{missing}/cancel"
        assert (await client.post(cancel, headers=admin)).status_code == 404
        assert (await client.post(cancel, headers=machine)).status_code == 404
        assert (await client.get(f"{API}/executions/{missing}", headers=operator)).status_code == 404

        service.clock.advance(19)
        assert_rate_limited(await client.post(cancel, headers=operator), "executions", 1)
        service.clock.advance(1)
        assert (await client.post(cancel, headers=operator)).status_code == 404
        assert_rate_limited(await client.post(cancel, headers=operator), "executions", 20)
        service.clock.advance(60)  # a whole minute: the full burst again
        for _ in range(3):
            assert (await client.post(cancel, headers=operator)).status_code == 404
        assert (await client.post(cancel, headers=operator)).status_code == 429

        # Authentication and role checks come first: no token is 401, a viewer is 403, whatever the bucket.
        assert (await client.post(cancel)).status_code == 401
        viewer = await bearer(client, *await add_user(client, admin, "viewer"))
        for _ in range(5):
            assert (await client.post(cancel, headers=viewer)).status_code == 403


@SQLITE_ONLY
async def test_a_disabled_execution_limit_never_refuses(running: Starter) -> None:
    async with running(rate_limit_executions_per_minute=0) as service, service.client() as client:
        admin = await bearer(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        for _ in range(70):
            assert (await client.post(f"{API}/executions/{uuid.uuid4()}/cancel", headers=admin)).status_code == 404


@SQLITE_ONLY
async def test_sign_in_is_limited_per_client_address(running: Starter) -> None:
    async with (
        running(rate_limit_auth_per_minute=3, login_max_failures=0) as service,
        service.client("10.0.0.1") as first,
        service.client("10.0.0.2") as second,
    ):
        assert (await token(first, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200
        assert (await token(first, ADMIN_USERNAME, "wrong")).status_code == 401
        assert (await token(first, "nobody", "wrong")).status_code == 401
        refused = await token(first, ADMIN_USERNAME, ADMIN_PASSWORD)
        assert_rate_limited(refused, "auth", 20)
        assert (await token(second, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200
        service.clock.advance(20)
        assert (await token(first, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200


@SQLITE_ONLY
async def test_sign_in_is_throttled_after_failures_for_a_username(running: Starter) -> None:
    settings = {
        "rate_limit_auth_per_minute": 0,
        "login_max_failures": 3,
        "login_max_failures_per_ip": 100,
        "login_failure_window_seconds": 60,
        "login_lockout_seconds": 300,
    }
    async with (
        running(**settings) as service,
        service.client() as client,
        service.client("10.9.9.9") as other,
    ):
        admin = await bearer(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        username, password = await add_user(client, admin, "viewer")

        # A success clears the failures so far.
        for _ in range(2):
            assert_error(await token(client, username, "guess"), 401, "UNAUTHORIZED")
        assert (await token(client, username, password)).status_code == 200
        for _ in range(2):
            assert (await token(client, username, "guess")).status_code == 401
        # Failures age out of the window.
        service.clock.advance(61)
        for _ in range(2):
            assert (await token(client, username, "guess")).status_code == 401
        assert (await token(client, username, password)).status_code == 200

        for _ in range(3):
            assert (await token(client, username, "guess")).status_code == 401
        # Locked: refused even with the right password, from any address, for the cool-down.
        assert_rate_limited(await token(client, username, password), "login", 300)
        assert_rate_limited(await token(other, username.upper(), password), "login", 300)
        service.clock.advance(200)
        assert_rate_limited(await token(client, username, password), "login", 100)
        # Other users are unaffected.
        assert (await token(client, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200
        service.clock.advance(100)
        assert (await token(client, username, password)).status_code == 200


@SQLITE_ONLY
async def test_sign_in_is_throttled_after_failures_from_an_address(running: Starter) -> None:
    settings = {
        "rate_limit_auth_per_minute": 0,
        "login_max_failures": 100,
        "login_max_failures_per_ip": 4,
        "login_lockout_seconds": 120,
    }
    async with (
        running(**settings) as service,
        service.client("10.0.0.66") as attacker,
        service.client("10.0.0.7") as client,
    ):
        # Password spraying: one guess for each of many usernames.
        for name in ("alice", "bob", "carol", "dave"):
            assert (await token(attacker, name, "Winter2024!")).status_code == 401
        assert_rate_limited(await token(attacker, ADMIN_USERNAME, ADMIN_PASSWORD), "login", 120)
        # The usernames were not locked: the admin signs in from elsewhere.
        assert (await token(client, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200
        service.clock.advance(120)
        assert (await token(attacker, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200


def test_limited_routes_document_the_429(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for method, path in [*LIMITED_ROUTES, ("POST", "/auth/token")]:
        operation = paths[API + path.replace("{id}", "{team_id}" if "teams" in path else "{execution_id}")]
        assert "429" in operation[method.lower()]["responses"], path
