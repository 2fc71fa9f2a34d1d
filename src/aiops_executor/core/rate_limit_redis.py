"""Rate limits and sign-in throttling shared by every process through Redis (``AIOPS_REDIS_URL``).

Same limits, same answers as the in-memory classes of ``rate_limit``, but the state lives in Redis, is changed
only by Lua scripts (atomic, so concurrent processes cannot both take the last token), and is timed by the
Redis server's clock and key TTLs, so processes agree whatever their own clocks say. Every key expires on its
own once it no longer matters.

When Redis cannot be reached, a call is answered by the in-memory limiter of this process instead (the user
request never fails because of the limiter); see ``redis_link``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from dataclasses import dataclass

from aiops_executor.core.rate_limit import (
    Clock,
    Decision,
    LoginAttempt,
    LoginThrottle,
    RateLimits,
    SignInAttempt,
    TokenBucket,
    login_locked_error,
    login_user_key,
)
from aiops_executor.core.redis_link import RedisLink, RedisUnavailable
from aiops_executor.core.settings import Settings

# The server's clock in milliseconds; every script reads it so that all processes share one time.
_NOW = "local clock = redis.call('TIME') local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)"

# KEYS[1]: the bucket, a hash {tokens, ms}. ARGV: capacity, period in ms. Returns {allowed, remaining, wait ms}.
# A key expires when its bucket would be full again: a missing key is a full bucket.
_TAKE = f"""
{_NOW}
local capacity = tonumber(ARGV[1])
local rate = capacity / tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1)
return {{allowed, math.floor(tokens), wait}}
"""

# KEYS: per lock, its failures (sorted set scored by time), its lockout (TTL = time left) and its attempts in
# flight. ARGV: window ms, in-flight TTL ms, then each lock's failure limit. Returns the wait in ms (0: go on,
# and the attempt is then counted in flight).
_BEGIN = f"""
{_NOW}
local window = tonumber(ARGV[1])
local locks = #KEYS / 3
local wait = 0
for i = 0, locks - 1 do
  local limit = tonumber(ARGV[3 + i])
  if limit > 0 then
    local ttl = redis.call('PTTL', KEYS[3 * i + 2])
    if ttl > 0 then
      wait = math.max(wait, ttl)
    else
      redis.call('ZREMRANGEBYSCORE', KEYS[3 * i + 1], '-inf', now - window)
      local pending = tonumber(redis.call('GET', KEYS[3 * i + 3]) or '0')
      if redis.call('ZCARD', KEYS[3 * i + 1]) + pending >= limit then
        wait = math.max(wait, 1000)
      end
    end
  end
end
if wait > 0 then return wait end
for i = 0, locks - 1 do
  if tonumber(ARGV[3 + i]) > 0 then
    redis.call('INCR', KEYS[3 * i + 3])
    redis.call('PEXPIRE', KEYS[3 * i + 3], ARGV[2])
  end
end
return 0
"""

# KEYS: per lock, its failures and its lockout. ARGV: window ms, lockout ms, a unique member, then each lock's
# failure limit. Returns per lock 1 when this failure locked it.
_FAIL = f"""
{_NOW}
local window = tonumber(ARGV[1])
local locked = {{}}
for i = 0, #KEYS / 2 - 1 do
  local limit = tonumber(ARGV[4 + i])
  locked[i + 1] = 0
  if limit > 0 then
    local failures, lock = KEYS[2 * i + 1], KEYS[2 * i + 2]
    redis.call('ZREMRANGEBYSCORE', failures, '-inf', now - window)
    redis.call('ZADD', failures, now, ARGV[3])
    if redis.call('ZCARD', failures) >= limit then
      redis.call('DEL', failures)
      redis.call('SET', lock, '1', 'PX', ARGV[2])
      locked[i + 1] = 1
    else
      redis.call('PEXPIRE', failures, window)
    end
  end
end
return locked
"""

_END = """
for _, key in ipairs(KEYS) do
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return 0
"""

# An attempt in flight whose process died is forgotten after this (a sign-in takes well under a second).
IN_FLIGHT_TTL_MS = 60_000


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisTokenBucket:
    """``TokenBucket`` shared through Redis: ``limit`` requests per ``period`` per key across all processes.

    ``fallback`` (the same limit, in memory) answers while Redis is unreachable.
    """

    def __init__(self, link: RedisLink, name: str, fallback: TokenBucket) -> None:
        self.link = link
        self.name = name
        self.fallback = fallback
        self._script = link.client.register_script(_TAKE)

    @property
    def limit(self) -> int:
        return self.fallback.limit

    async def take(self, key: str) -> Decision:
        if not self.fallback.enabled:
            return Decision(True, 0, 0.0)
        keys = [self.link.key("limit", self.name, key)]
        args = [self.limit, _ms(self.fallback.period)]
        try:
            allowed, remaining, wait_ms = await self.link.call(
                f"{self.name} rate limit", lambda: self._script(keys, args)
            )
        except RedisUnavailable:
            return self.fallback.hit(key)
        return Decision(bool(allowed), int(remaining), int(wait_ms) / 1000)


class RedisLoginThrottle:
    """``LoginThrottle`` shared through Redis: failures per username and per address within the window, and
    lockouts, count whichever process saw them.

    Attempts in flight are an INCR/DECR counter per username and address, so a burst of concurrent guesses
    spread over processes is still refused at the limit. The counter expires ``IN_FLIGHT_TTL_MS`` after the
    latest attempt began: a process that dies mid-attempt leaves its count behind for at most that long
    (refusing with a one-second wait meanwhile, at worst). Usernames are hashed in key names (one typed into
    the wrong field may be a password). ``fallback`` (in memory) answers while Redis is unreachable.
    """

    def __init__(self, link: RedisLink, settings: Settings, fallback: LoginThrottle) -> None:
        self.link = link
        self.fallback = fallback
        self.window_ms = _ms(settings.login_failure_window_seconds)
        self.lockout_ms = _ms(settings.login_lockout_seconds)
        self.limits = (settings.login_max_failures, settings.login_max_failures_per_ip)
        self._begin = link.client.register_script(_BEGIN)
        self._fail = link.client.register_script(_FAIL)
        self._end = link.client.register_script(_END)

    def lock_keys(self, user_key: str, address: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        """(failures, lockout, in flight) of the username, then of the address."""
        user = "user:" + hashlib.sha256(user_key.encode()).hexdigest()[:32]
        return (
            (
                self.link.key("limit", "login", user, "failures"),
                self.link.key("limit", "login", user, "lock"),
                self.link.key("limit", "login", user, "in_flight"),
            ),
            (
                self.link.key("limit", "login", "addr", address, "failures"),
                self.link.key("limit", "login", "addr", address, "lock"),
                self.link.key("limit", "login", "addr", address, "in_flight"),
            ),
        )

    async def begin(self, username: str, address: str) -> SignInAttempt:
        user_key = login_user_key(username)
        if not any(self.limits):
            return RedisLoginAttempt(self, user_key, address)
        user, addr = self.lock_keys(user_key, address)
        args = [self.window_ms, IN_FLIGHT_TTL_MS, *self.limits]
        try:
            wait_ms = await self.link.call("sign-in throttle", lambda: self._begin([*user, *addr], args))
        except RedisUnavailable:
            return await self.fallback.begin(username, address)
        if int(wait_ms) > 0:
            raise login_locked_error(int(wait_ms) / 1000)
        return RedisLoginAttempt(self, user_key, address)

    async def failed(self, user_key: str, address: str) -> list[str]:
        if not any(self.limits):
            return []
        user, addr = self.lock_keys(user_key, address)
        args: list[int | str] = [self.window_ms, self.lockout_ms, uuid.uuid4().hex, *self.limits]
        try:
            flags = await self.link.call("sign-in failure", lambda: self._fail([*user[:2], *addr[:2]], args))
        except RedisUnavailable:
            # Redis went away mid-attempt: this process still counts the failure.
            return await LoginAttempt(self.fallback, user_key, address).failed()
        return [name for name, flag in zip(("username", "address"), flags, strict=True) if int(flag)]

    async def succeeded(self, user_key: str) -> None:
        if not self.limits[0]:
            return
        user, _ = self.lock_keys(user_key, "")
        try:
            await self.link.call("sign-in reset", lambda: self.link.client.delete(*user[:2]))
        except RedisUnavailable:
            self.fallback.by_username.reset(user_key)

    async def end(self, user_key: str, address: str) -> None:
        locks = zip(self.lock_keys(user_key, address), self.limits, strict=True)
        counters = [keys[2] for keys, limit in locks if limit > 0]
        if not counters:
            return
        # Unavailable: the counter expires IN_FLIGHT_TTL_MS after it was last raised (the outage is logged).
        with contextlib.suppress(RedisUnavailable):
            await self.link.call("sign-in end", lambda: self._end(counters))


@dataclass
class RedisLoginAttempt:
    throttle: RedisLoginThrottle
    user_key: str
    address: str

    async def failed(self) -> list[str]:
        return await self.throttle.failed(self.user_key, self.address)

    async def succeeded(self) -> None:
        await self.throttle.succeeded(self.user_key)

    async def end(self) -> None:
        await self.throttle.end(self.user_key, self.address)


class RedisRateLimits(RateLimits):
    """``RateLimits`` whose limiters share their state through Redis; the in-memory ones are their fallbacks
    (and still read ``clock``)."""

    def __init__(self, settings: Settings, link: RedisLink, clock: Clock = time.monotonic) -> None:
        super().__init__(settings, clock)
        self.redis = link
        executions = TokenBucket(settings.rate_limit_executions_per_minute, 60.0, clock=self._now)
        auth = TokenBucket(settings.rate_limit_auth_per_minute, 60.0, clock=self._now)
        self.executions = RedisTokenBucket(link, "executions", executions)
        self.auth = RedisTokenBucket(link, "auth", auth)
        self.logins = RedisLoginThrottle(link, settings, LoginThrottle(settings, clock=self._now))


def build_rate_limits(settings: Settings) -> RateLimits:
    """Shared through Redis when ``AIOPS_REDIS_URL`` is set, else in this process (the embedded default)."""
    if settings.redis_url:
        return RedisRateLimits(settings, RedisLink.from_url(settings.redis_url))
    return RateLimits(settings)
