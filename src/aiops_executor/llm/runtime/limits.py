"""Requests and tokens per minute per endpoint (its ``rpm`` and ``tpm``): a call that finds the minute used up
waits for room instead of failing.

Each endpoint keeps a log of the calls let through within the last window (a minute; the window is a setting so
that tests can shorten it) and the tokens each was measured at. A call goes through when the log leaves room for
it under both limits, else it waits until the oldest calls that stand in its way have left the window: an exact
sliding window, so that no window of that length, wherever it starts, ever sees more than ``rpm`` calls. (A
token bucket refilled continuously would let up to twice ``rpm`` through in some windows: a full bucket spent at
once, then its refill.)

A call's tokens are what ``estimate.call_size`` expects it to use (``tokens_typical``), taken before the call.
A call larger than a whole window's ``tpm`` could never fit; it goes through alone, once the log is empty, rather
than waiting forever.

``LocalRateLimiter`` keeps the logs in this process; ``RedisRateLimiter`` keeps them in Redis (a sorted set per
endpoint, scored by Redis's clock, admitted by a Lua script) so that the limits hold across processes. Callers of
one process wait in line for an endpoint (one lock each), so that only the first of them polls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable

from aiops_executor.core.redis_link import RedisLink, RedisUnavailable
from aiops_executor.llm.runtime.config import EndpointConfig

# Redis's clock in milliseconds, as ``now`` (every process then measures windows by the same clock).
REDIS_NOW = (
    "local clock = redis.call('TIME') local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)"
)

# KEYS[1]: the calls within the window (sorted set, scored by when they went, members "<tokens>:<id>");
# KEYS[2]: the sum of their tokens. ARGV: window ms, rpm (0: none), tpm (0: none), this call's tokens, its id.
# Returns 0 when the call may go (and logs it), else the milliseconds until it would fit.
_TAKE = f"""
{REDIS_NOW}
local window = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
if #gone > 0 then
  local freed = 0
  for _, member in ipairs(gone) do freed = freed + tonumber(string.match(member, '^(%d+):')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  redis.call('DECRBY', KEYS[2], freed)
end
local count = redis.call('ZCARD', KEYS[1])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local wait = 0
if rpm > 0 and count >= rpm then
  local blocking = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  wait = tonumber(blocking[2]) + window - now
end
if tpm > 0 and used > 0 and used + tokens > tpm then
  local excess = used + tokens - tpm
  local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  local until_free = 0
  for i = 1, #entries, 2 do
    until_free = tonumber(entries[i + 1]) + window - now
    excess = excess - tonumber(string.match(entries[i], '^(%d+):'))
    if excess <= 0 then break end
  end
  wait = math.max(wait, until_free)
end
if wait > 0 then return math.ceil(wait) end
redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[5])
redis.call('INCRBY', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return 0
"""


def limited(endpoint: EndpointConfig | None) -> bool:
    return endpoint is not None and (endpoint.rpm is not None or endpoint.tpm is not None)


class WindowLog:
    """The calls one endpoint let through within the last window, oldest first, with their tokens."""

    def __init__(self) -> None:
        self.calls: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def take(self, now: float, window: float, rpm: int | None, tpm: int | None, tokens: int) -> float:
        """0 when a call of ``tokens`` fits now (it is then logged), else the seconds until it would."""
        while self.calls and self.calls[0][0] <= now - window:
            self.tokens -= self.calls.popleft()[1]
        wait = 0.0
        if rpm is not None and len(self.calls) >= rpm:
            wait = self.calls[len(self.calls) - rpm][0] + window - now
        if tpm is not None and self.tokens and self.tokens + tokens > tpm:
            excess = self.tokens + tokens - tpm
            until_free = 0.0
            for at, spent in self.calls:
                until_free = at + window - now
                excess -= spent
                if excess <= 0:
                    break
            # Not enough tokens ever leave (a call larger than tpm): it waits for the log to empty, then goes alone.
            wait = max(wait, until_free)
        if wait > 0:
            return wait
        self.calls.append((now, tokens))
        self.tokens += tokens
        return 0.0


class LocalRateLimiter:
    """The endpoints' rpm/tpm limits within this process (see module docstring)."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_seconds = window_seconds
        self.clock = clock
        self._logs: dict[uuid.UUID, WindowLog] = {}
        self._queues: dict[uuid.UUID, asyncio.Lock] = {}

    def queue(self, endpoint: EndpointConfig) -> asyncio.Lock:
        """The line this process's callers of ``endpoint`` wait in (first come, first served)."""
        return self._queues.setdefault(endpoint.id, asyncio.Lock())

    def take(self, endpoint: EndpointConfig, tokens: int) -> float:
        log = self._logs.setdefault(endpoint.id, WindowLog())
        return log.take(self.clock(), self.window_seconds, endpoint.rpm, endpoint.tpm, tokens)

    async def wait(self, endpoint: EndpointConfig, tokens: int) -> None:
        """Returns once a call of ``tokens`` to ``endpoint`` fits its limits (logged); cancellable meanwhile."""
        async with self.queue(endpoint):
            while True:
                wait = self.take(endpoint, tokens)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)


class RedisRateLimiter:
    """The endpoints' rpm/tpm limits across processes; while Redis is unavailable, ``fallback``'s in this process."""

    def __init__(self, link: RedisLink, window_seconds: float, fallback: LocalRateLimiter) -> None:
        self.link = link
        self.window_ms = max(1, round(window_seconds * 1000))
        self.fallback = fallback
        self._take = link.client.register_script(_TAKE)

    def keys(self, endpoint: EndpointConfig) -> list[str]:
        calls = self.link.key("rate", "endpoint", str(endpoint.id))
        return [calls, f"{calls}:tokens"]

    async def wait(self, endpoint: EndpointConfig, tokens: int) -> None:
        keys = self.keys(endpoint)
        args: list[int | str] = [self.window_ms, endpoint.rpm or 0, endpoint.tpm or 0, tokens, uuid.uuid4().hex]
        async with self.fallback.queue(endpoint):
            while True:
                try:
                    wait_ms = int(await self.link.call("endpoint rate limit", lambda: self._take(keys, args)))
                except RedisUnavailable:
                    wait = self.fallback.take(endpoint, tokens)  # this process's own log (the outage is logged)
                    if wait <= 0:
                        return
                    await asyncio.sleep(wait)
                    continue
                if wait_ms <= 0:
                    return
                await asyncio.sleep(wait_ms / 1000)
