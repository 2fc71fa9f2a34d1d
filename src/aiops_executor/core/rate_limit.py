"""Rate limiting: token buckets per caller and a login throttle against password guessing.

The classes here keep their state in this process (one ``RateLimits`` per ``AppContext``): that is the
embedded default, where one process serves. With ``AIOPS_REDIS_URL`` set, ``rate_limit_redis.RedisRateLimits``
shares the same limits between processes through Redis and falls back to these classes while Redis is down.
Callers only see the ``RequestLimiter`` and ``SignInGuard`` protocols. Every in-memory limiter reads the time
through a clock callable, so tests move time forward instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiops_executor.core.errors import AppError
from aiops_executor.core.redis_link import RedisLink
from aiops_executor.core.settings import Settings

Clock = Callable[[], float]

RATE_LIMITED = "RATE_LIMITED"
# Keys tracked at most, per limiter: a flood of distinct keys (random usernames) cannot grow memory without bound.
MAX_TRACKED_KEYS = 100_000


class RateLimitedError(AppError):
    """429 ``RATE_LIMITED`` with ``Retry-After`` (whole seconds, at least 1)."""

    status_code = 429
    error_code = RATE_LIMITED

    def __init__(self, message: str, retry_after: float, *, scope: str) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            message,
            details={"scope": scope, "retry_after_seconds": seconds},
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after = seconds


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after: float  # seconds until the next request would be allowed; 0 when allowed


class RequestLimiter(Protocol):
    """At most ``limit`` requests per minute per key (0: unlimited)."""

    @property
    def limit(self) -> int: ...

    async def take(self, key: str) -> Decision:
        """Charges one request to ``key``."""
        ...


class SignInAttempt(Protocol):
    """One sign-in in progress; ``end`` must follow whatever happens (after ``failed`` or ``succeeded``)."""

    async def failed(self) -> list[str]:
        """Counts the failure; returns what it locked (``username``, ``address``)."""
        ...

    async def succeeded(self) -> None: ...

    async def end(self) -> None: ...


class SignInGuard(Protocol):
    async def begin(self, username: str, address: str) -> SignInAttempt:
        """Starts an attempt, or raises ``RateLimitedError`` while the username or the address is locked."""
        ...


def login_user_key(username: str) -> str:
    """Usernames differing only in case or surrounding spaces share their failures."""
    return username.strip().casefold()[:256]


def login_locked_error(wait: float) -> RateLimitedError:
    return RateLimitedError("too many failed sign-in attempts; try again later", wait, scope="login")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucket:
    """``limit`` requests per ``period`` seconds per key, refilled continuously (bursts up to ``limit``).

    ``limit`` 0 disables the limiter: every request is allowed.
    """

    def __init__(self, limit: int, period: float = 60.0, *, clock: Clock = time.monotonic) -> None:
        if limit < 0 or period <= 0:
            raise ValueError("limit must be >= 0 and period > 0")
        self.limit = limit
        self.period = period
        self.clock = clock
        self._rate = limit / period  # tokens per second
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def hit(self, key: str) -> Decision:
        """Takes one token for ``key`` if there is one."""
        if not self.enabled:
            return Decision(True, 0, 0.0)
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.limit), now)
            self._buckets[key] = bucket
            self._evict()
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.limit), bucket.tokens + elapsed * self._rate)
            bucket.updated = now
            self._buckets.move_to_end(key)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return Decision(True, int(bucket.tokens), 0.0)
        return Decision(False, 0, (1.0 - bucket.tokens) / self._rate)

    async def take(self, key: str) -> Decision:
        return self.hit(key)

    def _evict(self) -> None:
        # Least recently used first; an evicted bucket's caller simply starts again with a full bucket.
        while len(self._buckets) > MAX_TRACKED_KEYS:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    in_flight: int = 0


class FailureLock:
    """After ``max_failures`` failures of one key within ``window`` seconds the key is locked for ``lockout``
    seconds. ``max_failures`` 0 disables it.

    Attempts whose outcome is not known yet count too (``begin``/``end``): a burst of concurrent guesses
    cannot slip past the limit before the first failures are recorded.
    """

    def __init__(self, max_failures: int, window: float, lockout: float, *, clock: Clock = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self._entries: OrderedDict[str, _Failures] = OrderedDict()

    def _entry(self, key: str, now: float) -> _Failures:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Failures()
            while len(self._entries) > MAX_TRACKED_KEYS:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        while entry.times and entry.times[0] <= now - self.window:
            entry.times.popleft()
        return entry

    def wait_for(self, key: str) -> float:
        """Seconds before an attempt for the key may be made; 0 when it may be made now."""
        if self.max_failures <= 0 or key not in self._entries:
            return 0.0
        now = self.clock()
        entry = self._entry(key, now)
        if entry.locked_until > now:
            return entry.locked_until - now
        if len(entry.times) + entry.in_flight >= self.max_failures:
            return 1.0  # the attempts in flight may still lock the key
        return 0.0

    def begin(self, key: str) -> None:
        if self.max_failures > 0:
            self._entry(key, self.clock()).in_flight += 1

    def end(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.in_flight = max(0, entry.in_flight - 1)
        if not entry.in_flight and not entry.times and entry.locked_until <= self.clock():
            del self._entries[key]

    def fail(self, key: str) -> bool:
        """Counts a failure; returns whether it locked the key."""
        if self.max_failures <= 0:
            return False
        now = self.clock()
        entry = self._entry(key, now)
        entry.times.append(now)
        if len(entry.times) >= self.max_failures:
            entry.times.clear()
            entry.locked_until = now + self.lockout
            return True
        return False

    def reset(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.times.clear()
            entry.locked_until = 0.0
            if not entry.in_flight:
                del self._entries[key]


class LoginThrottle:
    """Refuses sign-in for a username, or from an address, that failed too often recently, even with the
    right password. A successful sign-in clears the username's failures (not the address's)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        window, lockout = settings.login_failure_window_seconds, settings.login_lockout_seconds
        self.by_username = FailureLock(settings.login_max_failures, window, lockout, clock=clock)
        self.by_address = FailureLock(settings.login_max_failures_per_ip, window, lockout, clock=clock)

    async def begin(self, username: str, address: str) -> LoginAttempt:
        user_key = login_user_key(username)
        wait = max(self.by_username.wait_for(user_key), self.by_address.wait_for(address))
        if wait > 0:
            raise login_locked_error(wait)
        self.by_username.begin(user_key)
        self.by_address.begin(address)
        return LoginAttempt(self, user_key, address)


@dataclass
class LoginAttempt:
    throttle: LoginThrottle
    user_key: str
    address: str

    async def failed(self) -> list[str]:
        locked = []
        if self.throttle.by_username.fail(self.user_key):
            locked.append("username")
        if self.throttle.by_address.fail(self.address):
            locked.append("address")
        return locked

    async def succeeded(self) -> None:
        self.throttle.by_username.reset(self.user_key)

    async def end(self) -> None:
        self.throttle.by_username.end(self.user_key)
        self.throttle.by_address.end(self.address)


class RateLimits:
    """The process's limiters, built from settings. ``clock`` may be replaced (tests move time forward).

    These keep their state in memory; ``RedisRateLimits`` replaces them with limiters shared through Redis
    (``redis`` is then its connection, which the model runtime shares for its cool-downs and semaphores).
    """

    redis: RedisLink | None = None

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.executions: RequestLimiter = TokenBucket(settings.rate_limit_executions_per_minute, 60.0, clock=self._now)
        self.auth: RequestLimiter = TokenBucket(settings.rate_limit_auth_per_minute, 60.0, clock=self._now)
        self.logins: SignInGuard = LoginThrottle(settings, clock=self._now)

    def _now(self) -> float:
        return self.clock()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
