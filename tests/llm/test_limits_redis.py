"""Limits shared across processes through the real Redis on 127.0.0.1:6379: each limiter instance below, with
its own connection, stands for one process. Every test writes under its own key namespace and deletes it."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.app import create_app
from aiops_executor.core.context import AppContext
from aiops_executor.core.rate_limit import RateLimitedError, RateLimits
from aiops_executor.core.rate_limit_redis import RedisLoginThrottle, RedisRateLimits, build_rate_limits
from aiops_executor.core.redis_link import RedisLink, RedisUnavailable
from aiops_executor.llm.runtime import failover
from aiops_executor.llm.runtime.config import ModelBinding
from aiops_executor.llm.runtime.routes import Route, route_key
from aiops_executor.llm.runtime.routing import plan_routes
from aiops_executor.llm.runtime.service import ModelRuntime
from aiops_executor.llm.runtime.shared_state import SharedRuntimeState, SharedSemaphores
from aiops_executor.llm.runtime.state import RuntimeState
from tests.conftest import ADMIN_USERNAME, make_settings
from tests.core.test_rate_limits import FakeClock
from tests.helpers import API
from tests.llm.test_runtime_clients import endpoint, model
from tests.llm.test_runtime_failover import Harness, credential
from tests.mock_providers import OPENAI_KEY, OPENAI_KEY_2

REDIS_URL = "redis://127.0.0.1:6379/0"
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused at once

LinkFactory = Callable[..., RedisLink]


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"aiops:*:{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def link(namespace: str) -> AsyncIterator[LinkFactory]:
    """Makes links with a connection each (one per simulated process), closed after the test."""
    made: list[RedisLink] = []

    def make(url: str = REDIS_URL, **options: Any) -> RedisLink:
        made.append(RedisLink.from_url(url, namespace=namespace, **options))
        return made[-1]

    yield make
    for one in made:
        await one.close()


async def our_keys(namespace: str) -> list[str]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=f"aiops:*:{namespace}*")]
    finally:
        await client.aclose()


async def pttl(key: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(await client.pttl(key))
    finally:
        await client.aclose()


def limits(make: LinkFactory, tmp_path: Path, **overrides: Any) -> RedisRateLimits:
    settings = make_settings("sqlite+aiosqlite://", tmp_path, redis_url=REDIS_URL, **overrides)
    return RedisRateLimits(settings, make(), clock=FakeClock())


# ------------------------------------------------------------------------------------ API and sign-in


async def test_the_settings_choose_redis_or_memory(tmp_path: Path) -> None:
    assert type(build_rate_limits(make_settings("sqlite+aiosqlite://", tmp_path))) is RateLimits
    shared = build_rate_limits(make_settings("sqlite+aiosqlite://", tmp_path, redis_url=REDIS_URL))
    assert isinstance(shared, RedisRateLimits) and shared.redis is not None
    await shared.close()


async def test_an_api_rate_limit_is_shared_by_two_processes(link: LinkFactory, namespace: str, tmp_path: Path) -> None:
    first = limits(link, tmp_path, rate_limit_executions_per_minute=5)
    second = limits(link, tmp_path, rate_limit_executions_per_minute=5)
    caller = f"user:{uuid.uuid4()}"
    decisions = [await (first if i % 2 else second).executions.take(caller) for i in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    refused = await second.executions.take(caller)
    assert not refused.allowed and 11.0 < refused.retry_after <= 12.0  # 5 per minute: one more every 12 s
    assert not (await first.executions.take(caller)).allowed
    other = f"api_key:{uuid.uuid4()}"
    assert (await first.executions.take(other)).allowed  # callers are independent
    assert (await second.auth.take("10.0.0.1")).allowed  # and so are the limits
    # Only ids in key names, under the limits' prefix; a bucket expires once it would be full again.
    assert sorted(await our_keys(namespace)) == sorted(
        [
            f"aiops:limit:{namespace}executions:{caller}",
            f"aiops:limit:{namespace}executions:{other}",
            f"aiops:limit:{namespace}auth:10.0.0.1",
        ]
    )
    assert 0 < await pttl(f"aiops:limit:{namespace}executions:{caller}") <= 60_000


async def test_disabled_limits_never_refuse_nor_touch_redis(link: LinkFactory, namespace: str, tmp_path: Path) -> None:
    shared = limits(
        link, tmp_path, rate_limit_executions_per_minute=0, login_max_failures=0, login_max_failures_per_ip=0
    )
    assert all([(await shared.executions.take("user:x")).allowed for _ in range(100)])
    for _ in range(20):
        attempt = await shared.logins.begin("erin", "10.6.0.1")
        assert await attempt.failed() == []
        await attempt.end()
    assert await our_keys(namespace) == []


async def test_a_sign_in_lockout_set_by_one_process_refuses_on_the_other(
    link: LinkFactory, namespace: str, tmp_path: Path
) -> None:
    settings = {
        "login_max_failures": 3,
        "login_max_failures_per_ip": 100,
        "login_failure_window_seconds": 60,
        "login_lockout_seconds": 300,
    }
    first, second = limits(link, tmp_path, **settings), limits(link, tmp_path, **settings)
    username = f"Alice-{uuid.uuid4().hex[:6]}"

    async def fail(limits: RateLimits, name: str, address: str) -> list[str]:
        attempt = await limits.logins.begin(name, address)
        try:
            return await attempt.failed()
        finally:
            await attempt.end()

    # A success on one process clears the failures counted by the other.
    assert await fail(first, username, "10.1.0.1") == []
    assert await fail(second, username, "10.1.0.2") == []
    attempt = await second.logins.begin(username, "10.1.0.2")
    await attempt.succeeded()
    await attempt.end()
    assert await fail(first, username, "10.1.0.1") == []
    assert await fail(first, username, "10.1.0.1") == []
    assert await fail(second, f"  {username.upper()} ", "10.1.0.3") == ["username"]  # same user, other case

    with pytest.raises(RateLimitedError) as refused:
        await first.logins.begin(username, "10.1.0.9")
    assert refused.value.retry_after == 300 and refused.value.details["scope"] == "login"
    await (await second.logins.begin(f"bob-{uuid.uuid4().hex[:6]}", "10.1.0.9")).end()  # other users go on

    # The username is hashed in key names (one typed into the wrong field may be a password).
    keys = await our_keys(namespace)
    assert keys and all(k.startswith(f"aiops:limit:{namespace}login:") for k in keys)
    assert not any(username.casefold() in k.casefold() for k in keys)


async def test_attempts_in_flight_and_address_lockouts_count_across_processes(
    link: LinkFactory, tmp_path: Path
) -> None:
    settings = {"login_max_failures": 2, "login_max_failures_per_ip": 3, "login_lockout_seconds": 120}
    first, second = limits(link, tmp_path, **settings), limits(link, tmp_path, **settings)
    username = f"carol-{uuid.uuid4().hex[:6]}"
    pending = [await first.logins.begin(username, "10.2.0.1"), await first.logins.begin(username, "10.2.0.2")]
    with pytest.raises(RateLimitedError) as refused:  # the two guesses in flight may still lock the username
        await second.logins.begin(username, "10.2.0.3")
    assert refused.value.retry_after == 1
    for attempt in pending:
        await attempt.end()
    await (await second.logins.begin(username, "10.2.0.3")).end()

    # Password spraying from one address, spread over two processes.
    address = f"10.3.{random.randint(0, 255)}.{random.randint(0, 255)}"
    locked: list[str] = []
    for index, name in enumerate(["dave", "erin", "frank"]):
        attempt = await (first if index % 2 else second).logins.begin(f"{name}-{uuid.uuid4().hex[:6]}", address)
        locked = await attempt.failed()
        await attempt.end()
    assert locked == ["address"]
    with pytest.raises(RateLimitedError) as refused:
        await first.logins.begin(ADMIN_USERNAME, address)
    assert refused.value.retry_after == 120


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_two_services_share_sign_in_limits(database_url: str, tmp_path: Path) -> None:
    """Two API processes on one database and one Redis: what one refuses, the other refuses too."""
    overrides: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "rate_limit_auth_per_minute": 4,
        "login_max_failures": 2,
        "login_lockout_seconds": 60,
    }
    first = create_app(make_settings(database_url, tmp_path / "one", **overrides))
    second = create_app(make_settings(database_url, tmp_path / "two", **overrides))
    # Service keys carry no test namespace: a username and an address of this test's own, deleted at the end.
    username = f"ghost-{uuid.uuid4().hex[:8]}"
    address = f"10.4.{random.randint(0, 255)}.{random.randint(0, 255)}"
    async with LifespanManager(first), LifespanManager(second):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://test")
            for app in (first, second)
        ]

        async def sign_in(index: int) -> httpx.Response:
            form = {"username": username, "password": "guess"}
            return await clients[index].post(f"{API}/auth/token", data=form)

        limits: RateLimits = first.state.context.rate_limits
        assert isinstance(limits.logins, RedisLoginThrottle) and limits.redis is not None
        try:
            assert (await sign_in(0)).status_code == 401
            assert (await sign_in(1)).status_code == 401
            for index in (0, 1):  # locked by the failures both processes saw
                locked = await sign_in(index)
                assert locked.status_code == 429 and locked.json()["details"]["scope"] == "login"
            over = await sign_in(0)  # the fifth request from this address this minute
            assert over.status_code == 429 and over.json()["details"]["scope"] == "auth"
        finally:
            for client in clients:
                await client.aclose()
            user, addr = limits.logins.lock_keys(username, address)
            await limits.redis.client.delete(*user, *addr, limits.redis.key("limit", "auth", address))


# ------------------------------------------------------------------------------------------ model runtime


def shared_state(make: LinkFactory, **values: Any) -> SharedRuntimeState:
    return SharedRuntimeState(link=make(), **values)


async def test_a_cool_down_set_by_one_process_is_seen_by_the_other(link: LinkFactory, namespace: str) -> None:
    first, second = shared_state(link), shared_state(link)
    ep = endpoint("http://unused")
    hot, spare = credential("hot"), credential("spare")
    binding = ModelBinding(model("openai", "gpt-4o-mini"), (ep,), (hot, spare))
    assert [r.credential for r in plan_routes(binding, second)] == [hot, spare]

    await first.share_cool_down("credential", hot.id, 30)
    await second.load_cooling(binding)
    assert [r.credential for r in plan_routes(binding, second)] == [spare, hot]
    assert 28 < second.cooling_until(Route(ep, hot)) - time.monotonic() <= 30
    key = f"aiops:cooldown:{namespace}credential:{hot.id}"
    assert 28_000 < await pttl(key) <= 30_000

    # A shorter cool-down from elsewhere does not cut a longer one short; a longer one extends it.
    await second.share_cool_down("credential", hot.id, 1)
    assert await pttl(key) > 28_000
    await second.share_cool_down("credential", hot.id, 90)
    assert await pttl(key) > 88_000

    await first.share_cool_down("endpoint", ep.id)  # the default cool-down (30 s)
    fresh = shared_state(link)
    await fresh.load_cooling(binding)
    assert fresh.cooling_until(Route(ep, spare)) > 0
    assert sorted(await our_keys(namespace)) == sorted([key, f"aiops:cooldown:{namespace}endpoint:{ep.id}"])


async def test_a_429_seen_by_one_process_sends_the_other_to_the_next_key(
    link: LinkFactory, namespace: str, openai_mock: MockLLMServer
) -> None:
    openai_mock.behaviour.fail_next(1, 429, retry_after=45, only_key=OPENAI_KEY)
    first, second = credential("first"), credential("second")
    binding = ModelBinding(model("openai", "gpt-4o-mini"), (endpoint(openai_mock.client_base_url),), (first, second))
    keys = {"first": OPENAI_KEY, "second": OPENAI_KEY_2}
    one = Harness(binding, keys, state=shared_state(link, cooldown_seconds=5))
    other = Harness(binding, keys, state=shared_state(link, cooldown_seconds=5))

    await one.model.ainvoke("hi")
    assert one.outcomes() == ["rate_limited", "success"]
    throttled = route_key(binding.endpoints[0].id, first.id)  # this key on this endpoint
    assert 43_000 < await pttl(f"aiops:cooldown:{namespace}route:{throttled}") <= 45_000  # Retry-After
    await other.model.ainvoke("hi")
    assert other.outcomes() == ["success"]
    assert [c.credential_id for c in other.calls] == [second.id], "the other process never tried the 429 key"


async def test_the_endpoint_cap_holds_across_processes(link: LinkFactory, namespace: str) -> None:
    states = [shared_state(link, max_concurrency_per_endpoint=3, poll_seconds=0.005) for _ in range(2)]
    ep = endpoint("http://unused")
    in_flight = peak = 0

    async def call(state: SharedRuntimeState) -> None:
        nonlocal in_flight, peak
        async with state.slot(ep):
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1

    await asyncio.gather(*(call(states[i % 2]) for i in range(24)))
    assert peak == 3  # each process alone would have let 3 in: 6 together
    assert await our_keys(namespace) in ([], [f"aiops:sem:{namespace}endpoint:{ep.id}"])
    client = states[0].link.client
    assert await client.zcard(f"aiops:sem:{namespace}endpoint:{ep.id}") == 0  # every slot was given back


async def test_the_cap_holds_through_a_model_call(monkeypatch: pytest.MonkeyPatch, link: LinkFactory) -> None:
    from tests.llm.test_runtime_failover import SlowFake

    fake = SlowFake()
    monkeypatch.setattr(failover, "build_client", lambda *args, **kwargs: fake)
    binding = ModelBinding(model("openai", "gpt-4o-mini"), (endpoint("http://unused"),), (credential("k"),))
    harnesses = [
        Harness(binding, {"k": "x"}, state=shared_state(link, max_concurrency_per_endpoint=2, poll_seconds=0.005))
        for _ in range(2)
    ]
    await asyncio.gather(*(harnesses[i % 2].model.ainvoke("hi") for i in range(12)))
    assert fake.peak == 2
    assert sum(len(h.calls) for h in harnesses) == 12


async def test_a_holder_that_dies_frees_its_slot_when_its_lease_runs_out(link: LinkFactory) -> None:
    ep = endpoint("http://unused")
    dead = SharedSemaphores(link(), lease_seconds=0.5)
    assert await dead.acquire(f"endpoint:{ep.id}", 1) is not None  # never released nor renewed: its process died
    survivor = shared_state(link, max_concurrency_per_endpoint=1, lease_seconds=0.5, poll_seconds=0.01)
    started = time.monotonic()
    async with survivor.slot(ep):
        waited = time.monotonic() - started
    assert 0.3 < waited < 3


async def test_a_live_holder_keeps_its_slot_beyond_one_lease(link: LinkFactory) -> None:
    ep = endpoint("http://unused")
    holder, waiter = (
        shared_state(link, max_concurrency_per_endpoint=1, lease_seconds=0.3, poll_seconds=0.01) for _ in range(2)
    )
    order: list[str] = []

    async def hold() -> None:
        async with holder.slot(ep):
            order.append("held")
            await asyncio.sleep(1.0)  # more than three leases: renewed meanwhile
            order.append("released")

    async def wait() -> None:
        await asyncio.sleep(0.1)
        async with waiter.slot(ep):
            order.append("entered")

    await asyncio.gather(hold(), wait())
    assert order == ["held", "released", "entered"]


# ----------------------------------------------------------------------------------- Redis unreachable


async def test_limits_fall_back_to_memory_while_redis_is_unreachable(link: LinkFactory, tmp_path: Path) -> None:
    settings = make_settings(
        "sqlite+aiosqlite://",
        tmp_path,
        redis_url=DOWN_URL,
        rate_limit_executions_per_minute=2,
        login_max_failures=2,
        login_lockout_seconds=60,
    )
    clock = FakeClock()
    down = link(DOWN_URL, retry_seconds=0)  # retry Redis on every call: still one warning
    with capture_logs() as logs:
        shared = RedisRateLimits(settings, down, clock=clock)
        assert [(await shared.executions.take("user:x")).allowed for _ in range(3)] == [True, True, False]
        clock.advance(30)
        assert (await shared.executions.take("user:x")).allowed

        for _ in range(2):
            attempt = await shared.logins.begin("dora", "10.5.0.1")
            locked = await attempt.failed()
            await attempt.end()
        assert locked == ["username"]
        with pytest.raises(RateLimitedError):
            await shared.logins.begin("dora", "10.5.0.1")

        state = SharedRuntimeState(link=down, max_concurrency_per_endpoint=2)
        ep, key = endpoint("http://unused"), credential("k")
        binding = ModelBinding(model("openai", "gpt-4o-mini"), (ep,), (key,))
        await state.share_cool_down("credential", key.id, 30)
        await state.load_cooling(binding)
        assert state.cooling_until(Route(ep, key)) > 0  # kept in this process
        in_flight = peak = 0

        async def call() -> None:
            nonlocal in_flight, peak
            async with state.slot(ep):
                in_flight += 1
                peak = max(peak, in_flight)
                await asyncio.sleep(0.01)
                in_flight -= 1

        await asyncio.gather(*(call() for _ in range(8)))
        assert peak == 2  # the local semaphore still caps the endpoint
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "Redis unreachable" in warnings[0]["event"]
    assert down.down


async def test_an_outage_is_logged_once_and_its_end_too() -> None:
    link = RedisLink(redis.Redis.from_url(REDIS_URL), retry_seconds=60)

    async def broken() -> None:
        raise redis.ConnectionError("connection refused")

    async def fine() -> str:
        return "ok"

    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.call("test", broken)
        with pytest.raises(RedisUnavailable):  # skipped without a try while the outage is recent
            await link.call("test", fine)
        link.retry_seconds = 0
        link._skip_until = 0.0
        assert await link.call("test", fine) == "ok"
    assert [entry["log_level"] for entry in logs] == ["warning", "info"]
    assert not link.down
    await link.close()


async def test_the_runtime_shares_the_limits_connection(tmp_path: Path) -> None:
    memory = AppContext.build(make_settings("sqlite+aiosqlite://", tmp_path / "a"))
    shared = AppContext.build(make_settings("sqlite+aiosqlite://", tmp_path / "b", redis_url=REDIS_URL))
    try:
        assert type(ModelRuntime(memory).state) is RuntimeState
        state = ModelRuntime(shared).state
        assert isinstance(state, SharedRuntimeState) and state.link is shared.rate_limits.redis
    finally:
        await memory.close()
        await shared.close()
