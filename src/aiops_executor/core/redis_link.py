"""The Redis connection that shares limits between processes, and what happens while Redis is down.

A limiter must never be the reason a user request fails: when Redis cannot be reached, each call falls back
to the same limit kept in this process (so limits still hold per process), one warning is logged per outage,
and for ``RETRY_SECONDS`` after a failure calls go straight to memory instead of each waiting for a
connection timeout. The first call after that tries Redis again; its success ends the outage.

Keys are ``aiops:<kind>:<namespace><id>`` (``kind``: ``limit``, ``cooldown``, ``sem``). Only ids, addresses
and hashes go into keys, never a secret; the namespace is empty in service, tests use one of their own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

logger = structlog.get_logger(__name__)

T = TypeVar("T")

RETRY_SECONDS = 5.0
# Short timeouts and a single retry (for a pooled connection the server closed meanwhile), instead of the
# client's ten: a limiter that waits long for Redis delays every request it guards.
CONNECT_TIMEOUT_SECONDS = 0.5
SOCKET_TIMEOUT_SECONDS = 2.0
RETRIES = 1


class RedisUnavailable(Exception):
    """Redis could not serve a limiter call (or is being skipped after a recent failure): use memory."""


class RedisLink:
    """One process's Redis client for shared limits, with outage bookkeeping (see module docstring)."""

    def __init__(self, client: redis.Redis, *, namespace: str = "", retry_seconds: float = RETRY_SECONDS) -> None:
        self.client = client
        self.namespace = namespace
        self.retry_seconds = retry_seconds
        self._down = False
        self._skip_until = 0.0  # monotonic

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "", retry_seconds: float = RETRY_SECONDS) -> RedisLink:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), RETRIES),
        )
        return cls(client, namespace=namespace, retry_seconds=retry_seconds)

    def key(self, kind: str, *parts: str) -> str:
        return f"aiops:{kind}:{self.namespace}{':'.join(parts)}"

    @property
    def down(self) -> bool:
        """Whether the last call failed (the outage has not ended yet)."""
        return self._down

    async def call(self, operation: str, command: Callable[[], Awaitable[T]]) -> T:
        """Runs ``command`` against Redis; raises ``RedisUnavailable`` when the caller must use memory."""
        if self._down and time.monotonic() < self._skip_until:
            raise RedisUnavailable(operation)
        try:
            result = await command()
        except (redis.RedisError, OSError) as exc:
            self._failed(operation, exc)
            raise RedisUnavailable(operation) from exc
        if self._down:
            self._down = False
            logger.info("Redis reachable again; limits are shared across processes again", operation=operation)
        return result

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self.retry_seconds
        if not self._down:
            self._down = True
            logger.warning(
                "Redis unreachable; limits are kept in this process only until it is back",
                operation=operation,
                error=f"{type(exc).__name__}: {exc}",
            )

    async def close(self) -> None:
        await self.client.aclose()
