"""In-process read cache for LLM configuration.

Every write bumps a generation counter after it commits; a reader stores what it loaded only if the
generation did not move while it was loading, so a read racing a write can never pin stale data.
Entries also expire after a TTL, which bounds staleness when another process wrote; with Redis, a
configuration write also reaches every other process at once (``cache_bus``, through ``on_change``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigCache:
    def __init__(self, ttl_seconds: float = 60.0, max_entries: int = 10_000) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._generation = 0
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self.hits = 0
        self.misses = 0
        # Called after a whole-cache invalidation made here (a configuration write), to tell other processes.
        self.on_change: Callable[[], None] | None = None

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self, where: Callable[[Hashable], bool] | None = None) -> None:
        """Drop every entry, or only those whose key ``where`` selects (loads in flight are not stored either).

        Only a whole-cache invalidation (a configuration write) is announced to other processes; a selective
        one (a credential's usage counter, after every call) is left to their TTL.
        """
        self._generation += 1
        if where is None:
            self._entries.clear()
            if self.on_change is not None:
                self.on_change()
        else:
            for key in [key for key in self._entries if where(key)]:
                del self._entries[key]

    def invalidate_from_elsewhere(self) -> None:
        """Another process changed the configuration: drop every entry, without announcing it again."""
        self._generation += 1
        self._entries.clear()

    async def get_or_load(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        if self.ttl_seconds > 0:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > time.monotonic():
                self.hits += 1
                return entry[1]  # type: ignore[no-any-return]
        self.misses += 1
        generation = self._generation
        value = await loader()
        if self.ttl_seconds > 0 and generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_seconds, value)
        return value
