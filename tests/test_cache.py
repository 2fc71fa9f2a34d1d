"""The configuration read cache: hits, full and selective invalidation, and no stale store after a race."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiops_executor.core.cache import ConfigCache


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
