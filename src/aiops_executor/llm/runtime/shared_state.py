"""Failover state shared by every process through Redis (``AIOPS_REDIS_URL``): cool-downs and concurrency caps.

A cool-down is a key ``aiops:cooldown:<endpoint|credential>:<id>`` whose TTL is the time left, so a 429 (with
its Retry-After) or a dead endpoint seen by one process makes every process skip that route until the key
expires. Each call reads the TTLs of its binding's routes in one round trip before planning. A cool-down only
ever lengthens one set by another process, never shortens it.

``max_concurrent_calls_per_endpoint`` becomes a cap across all processes: a call holds a slot in the sorted
set ``aiops:sem:endpoint:<id>`` (see ``SharedSemaphores``) as well as in this process's own semaphore, which
keeps more callers than the cap from polling Redis at once.

Endpoints' rpm/tpm limits (``limits.RedisRateLimiter``) and circuit breakers (``breaker.RedisBreakers``) are
kept in Redis too, so that every process counts the same window and sees the same breaker.

While Redis is unreachable, cool-downs, caps, rate limits and breakers are kept in this process only
(``RuntimeState``): model calls never fail because of Redis; ``redis_link`` logs the outage once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from aiops_executor.core.redis_link import RedisLink, RedisUnavailable
from aiops_executor.llm.runtime.breaker import Change, CircuitPass, CircuitState, Outcome, RedisBreakers
from aiops_executor.llm.runtime.config import EndpointConfig
from aiops_executor.llm.runtime.limits import REDIS_NOW, LocalRateLimiter, RedisRateLimiter
from aiops_executor.llm.runtime.state import RuntimeState

logger = structlog.get_logger(__name__)

# KEYS[1]: the holders (sorted set, scored by lease expiry). ARGV: limit, lease ms, holder token.
# Expired leases (holders that died) are dropped first; the set expires with its latest lease.
_ACQUIRE = f"""
{REDIS_NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1]: the holders. ARGV: lease ms, holder token. 0 when the holder is no longer in the set.
_RENEW = f"""
{REDIS_NOW}
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

LEASE_SECONDS = 30.0
POLL_SECONDS = 0.05


class SharedSemaphores:
    """Counting semaphores across processes: per name, a sorted set of holders scored by lease expiry.

    A holder renews its lease every third of ``lease_seconds`` while it holds the slot and removes itself on
    exit; a holder whose process died stops renewing, and its slot is free once the lease runs out. Waiters
    poll every ``poll_seconds``. A task cancelled while its acquire is on the wire may hold a slot until
    the lease runs out: rare (one round trip) and bounded.
    """

    def __init__(
        self, link: RedisLink, *, lease_seconds: float = LEASE_SECONDS, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.link = link
        self.lease_ms = max(1, round(lease_seconds * 1000))
        self.poll_seconds = poll_seconds
        self._acquire = link.client.register_script(_ACQUIRE)
        self._renew = link.client.register_script(_RENEW)

    def key(self, name: str) -> str:
        return self.link.key("sem", name)

    async def acquire(self, name: str, limit: int) -> str | None:
        """Waits for a slot; returns the holder token, or None when Redis is unavailable (no slot held)."""
        token = uuid.uuid4().hex
        args: list[int | str] = [limit, self.lease_ms, token]
        while True:
            try:
                got = await self.link.call("concurrency slot", lambda: self._acquire([self.key(name)], args))
            except RedisUnavailable:
                return None
            if int(got):
                return token
            await asyncio.sleep(self.poll_seconds)

    async def renew(self, name: str, token: str) -> bool:
        """Extends the lease; False when the slot was lost (its lease ran out before a renewal came)."""
        return bool(
            await self.link.call("concurrency lease", lambda: self._renew([self.key(name)], [self.lease_ms, token]))
        )

    async def release(self, name: str, token: str) -> None:
        # Unavailable: the slot frees itself when its lease runs out (the outage is logged).
        with contextlib.suppress(RedisUnavailable):
            await self.link.call("concurrency release", lambda: self.link.client.zrem(self.key(name), token))

    async def _keep(self, name: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await self.renew(name, token):
                    logger.warning("a concurrency slot's lease ran out while held; the call goes on", slot=name)
                    return
            except RedisUnavailable:
                continue  # renewed on the next round if Redis is back; the outage is logged

    @asynccontextmanager
    async def hold(self, name: str, limit: int) -> AsyncIterator[None]:
        """Holds one of ``limit`` slots of ``name`` (or none while Redis is unavailable)."""
        token = await self.acquire(name, limit)
        if token is None:
            yield
            return
        renewing = asyncio.create_task(self._keep(name, token))
        try:
            yield
        finally:
            renewing.cancel()
            await self.release(name, token)


@dataclass
class SharedRuntimeState(RuntimeState):
    """``RuntimeState`` whose cool-downs, per-endpoint caps, rpm/tpm limits and circuit breakers hold across
    processes (see module docstring).

    ``reset`` clears only this process's copy of the cool-downs and breakers. Exhausted credentials stay per
    process: the database's quota counts already make every process drop them when it next loads the configuration.
    """

    link: RedisLink = field(kw_only=True)
    lease_seconds: float = field(default=LEASE_SECONDS, kw_only=True)
    poll_seconds: float = field(default=POLL_SECONDS, kw_only=True)
    semaphores: SharedSemaphores = field(init=False)
    shared_breakers: RedisBreakers = field(init=False)
    # Releases of abandoned probes in flight (held here: the event loop keeps only weak references to tasks).
    _releases: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.semaphores = SharedSemaphores(self.link, lease_seconds=self.lease_seconds, poll_seconds=self.poll_seconds)
        window = self.rate_limit_window_seconds
        self.rate_limiter = RedisRateLimiter(self.link, window, fallback=LocalRateLimiter(window))
        self.shared_breakers = RedisBreakers(self.link, self.breaker_policy)

    def cooldown_key(self, kind: str, key: uuid.UUID) -> str:
        return self.link.key("cooldown", kind, str(key))

    async def load_cooldowns(self, keys: set[tuple[str, uuid.UUID]]) -> None:
        routes = sorted(keys)
        if not routes:
            return

        async def read_ttls() -> list[int]:
            pipe = self.link.client.pipeline(transaction=False)
            for kind, key in routes:
                pipe.pttl(self.cooldown_key(kind, key))
            return list(await pipe.execute())

        try:
            ttls = await self.link.call("cool-down read", read_ttls)
        except RedisUnavailable:
            return  # this process's own cool-downs still apply
        now = time.monotonic()
        for route, ttl in zip(routes, ttls, strict=True):
            if int(ttl) > 0:  # -2: no cool-down; a local one set during an outage is kept either way
                self._cooling[route] = max(self._cooling.get(route, 0.0), now + int(ttl) / 1000)

    async def share_cool_down(self, kind: str, key: uuid.UUID, seconds: float | None = None) -> None:
        seconds = self.cooldown_seconds if seconds is None else seconds
        self.cool_down(kind, key, seconds)
        ms = round(seconds * 1000)
        if ms <= 0:
            return
        name = self.cooldown_key(kind, key)

        async def write() -> object:
            # NX then PEXPIRE GT: creates the cool-down, or lengthens a shorter one, never shortens it.
            pipe = self.link.client.pipeline(transaction=True)
            pipe.set(name, "1", px=ms, nx=True)
            pipe.pexpire(name, ms, gt=True)
            return await pipe.execute()

        # Unavailable: the cool-down holds in this process (set above); the outage is logged.
        with contextlib.suppress(RedisUnavailable):
            await self.link.call("cool-down write", write)

    @asynccontextmanager
    async def slot(self, endpoint: EndpointConfig | None) -> AsyncIterator[None]:
        semaphore = self.semaphore(endpoint)
        if semaphore is None or endpoint is None:
            yield
            return
        async with semaphore, self.semaphores.hold(f"endpoint:{endpoint.id}", self.max_concurrency_per_endpoint):
            yield

    # Circuit breakers: the one in Redis; this process's own while Redis is unavailable.

    async def _admit_circuit(self, endpoint: EndpointConfig) -> CircuitPass:
        try:
            return await self.shared_breakers.admit(endpoint.id, self.probe_lease(endpoint))
        except RedisUnavailable:
            return await super()._admit_circuit(endpoint)

    async def _record_circuit(
        self, endpoint: EndpointConfig, circuit: CircuitPass, outcome: Outcome, retry_after: float | None
    ) -> Change:
        if circuit.shared:
            try:
                return await self.shared_breakers.record(endpoint.id, circuit.probe, outcome, retry_after)
            except RedisUnavailable:
                pass  # counted in this process (a probe Redis let through is then replaced after its lease)
        return await super()._record_circuit(endpoint, circuit, outcome, retry_after)

    def circuit_abandon(self, endpoint: EndpointConfig, circuit: CircuitPass) -> None:
        if circuit.probe is None or not circuit.shared:
            super().circuit_abandon(endpoint, circuit)
            return
        # Called where the caller cannot wait (a cancelled call, a closed stream): released in the background.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to release it with: the probe is replaced once its lease runs out
        release = loop.create_task(self._release_probe(endpoint, circuit.probe))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    async def _release_probe(self, endpoint: EndpointConfig, probe: str) -> None:
        # Unavailable: the probe is replaced once its lease runs out (the outage is logged).
        with contextlib.suppress(RedisUnavailable):
            await self.shared_breakers.abandon(endpoint.id, probe)

    async def circuit_states(self, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CircuitState]:
        try:
            return await self.shared_breakers.states(endpoint_ids)
        except RedisUnavailable:
            return await super().circuit_states(endpoint_ids)
