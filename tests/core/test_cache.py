"""The configuration read cache: hits, full and selective invalidation, no stale store after a race, and
configuration changes reaching other processes through Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from aiops_executor.core.cache import ConfigCache
from aiops_executor.core.cache_bus import ConfigChangeBus

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_hits_and_invalidation() -> None:
    cache = ConfigCache(ttl_seconds=60)
    loads: list[str] = []

    def loader(value: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            loads.append(value)
            return value

        return load

    assert await cache.get_or_load(("llm", "provider", 1), loader("p1")) == "p1"
    assert await cache.get_or_load(("llm", "credential", 1), loader("c1")) == "c1"
    assert await cache.get_or_load(("llm", "provider", 1), loader("unused")) == "p1"
    assert (cache.hits, cache.misses) == (1, 2)

    cache.invalidate(lambda key: isinstance(key, tuple) and key[1] == "credential")
    assert await cache.get_or_load(("llm", "provider", 1), loader("unused")) == "p1", "other entries survive"
    assert await cache.get_or_load(("llm", "credential", 1), loader("c2")) == "c2"

    cache.invalidate()
    assert await cache.get_or_load(("llm", "provider", 1), loader("p2")) == "p2"
    assert loads == ["p1", "c1", "c2", "p2"]


async def test_a_load_racing_an_invalidation_is_not_stored() -> None:
    cache = ConfigCache(ttl_seconds=60)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "stale"

    task = asyncio.create_task(cache.get_or_load("key", slow))
    await started.wait()
    cache.invalidate(lambda key: key == "elsewhere")  # even a selective invalidation forbids storing
    release.set()
    assert await task == "stale"

    async def fresh() -> str:
        return "fresh"

    assert await cache.get_or_load("key", fresh) == "fresh"


async def test_a_configuration_change_reaches_the_other_processes_at_once() -> None:
    """Two caches standing for two processes, sharing the real Redis on a channel of their own."""
    channel = f"aiops:test-config-changed:{uuid.uuid4().hex}"
    here, there = ConfigCache(ttl_seconds=3600), ConfigCache(ttl_seconds=3600)
    buses = [ConfigChangeBus(REDIS_URL, cache, channel=channel) for cache in (here, there)]
    for bus in buses:
        await bus.start()
    try:
        loads = Counter[str]()

        async def load(name: str) -> str:
            loads[name] += 1
            return f"{name}-{loads[name]}"

        assert await there.get_or_load("provider", lambda: load("there")) == "there-1"
        assert await here.get_or_load("provider", lambda: load("here")) == "here-1"
        # A selective invalidation (a usage counter after each call) stays in its process.
        here.invalidate(lambda key: key == "provider")
        await asyncio.sleep(0.2)
        assert await there.get_or_load("provider", lambda: load("there")) == "there-1"
        # A configuration write here: the other process drops its entries within moments, this one is not
        # told twice by its own message.
        assert await here.get_or_load("provider", lambda: load("here")) == "here-2"
        here.invalidate()
        for _ in range(50):
            if await there.get_or_load("provider", lambda: load("there")) == "there-2":
                break
            await asyncio.sleep(0.02)
        assert loads["there"] == 2
        assert await here.get_or_load("provider", lambda: load("here")) == "here-3"
        await asyncio.sleep(0.2)
        assert await here.get_or_load("provider", lambda: load("here")) == "here-3"
    finally:
        for bus in buses:
            await bus.close()
