"""Liveness: whether this process can still serve, as ``GET /health`` answers it (and so the Dockerfile's and
compose's health checks, which restart a process that fails it three times in a row).

Readiness (``/health/ready``) asks whether the dependencies answer now; liveness asks whether restarting this
process would help. It fails when:

- **the event loop stalls**: a watcher sleeps ``AIOPS_LIVENESS_TICK_SECONDS`` at a time and measures how late it
  wakes; a lag beyond ``AIOPS_LIVENESS_MAX_LOOP_LAG_SECONDS`` (in the last tick, or now, while the tick is
  overdue) means requests, runs and heartbeats wait that long too. A loop blocked for good cannot answer at all:
  the health check's own timeout fails it then.
- **memory is exhausted**: a ``MemoryError`` reached the request handler (the process is in an unknown state
  from then on, so this stays), or the resident memory is above ``AIOPS_LIVENESS_MEMORY_LIMIT_MB`` (by default
  90 % of the container's memory limit when it has one: the kernel's OOM killer would come next).
- **the database stays unreachable**: the watcher checks it every ``AIOPS_LIVENESS_DATABASE_PROBE_SECONDS``;
  failing without a break for more than ``AIOPS_LIVENESS_DATABASE_GRACE_SECONDS``, the process's pool is
  presumed broken (a restart builds a new one). A shorter outage fails readiness only.

The watcher runs in the API process's lifespan; what it saw is read by ``/health`` without any waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

OK = "ok"
STALLED = "stalled"
EXHAUSTED = "exhausted"
UNREACHABLE = "unreachable"
CGROUP_SHARE = 0.9  # of the container's memory limit, the default limit of resident memory
_FAILURES = {
    "event_loop": "the event loop is stalled",
    "memory": "the process's memory is exhausted",
    "database": "the database has not been reachable for longer than the grace period",
}

logger = structlog.get_logger(__name__)


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def container_memory_limit() -> int | None:
    """The cgroup's memory limit in bytes (v2, then v1), None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 2**60:  # v1 says "no limit" with a huge number
            return int(value)
        return None
    return None


class Liveness:
    """The watcher (``run``, a task of the lifespan) and the verdict (``checks``)."""

    def __init__(
        self,
        *,
        tick_seconds: float,
        max_loop_lag_seconds: float,
        memory_limit_bytes: int | None,
        database_probe: Callable[[], Awaitable[None]],
        database_probe_seconds: float,
        database_grace_seconds: float,
        database_timeout_seconds: float,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.max_loop_lag_seconds = max_loop_lag_seconds
        self.memory_limit_bytes = memory_limit_bytes
        self.database_probe = database_probe
        self.database_probe_seconds = database_probe_seconds
        self.database_grace_seconds = database_grace_seconds
        self.database_timeout_seconds = database_timeout_seconds
        self.watching = False  # the loop's lag is judged only while the watcher runs
        self.last_lag = 0.0
        self.last_tick = time.monotonic()
        self.database_failing_since: float | None = None
        self.memory_error_seen = False
        self._next_probe = 0.0

    def note_unhandled(self, error: BaseException) -> None:
        """Called with every error no handler answered: a ``MemoryError`` marks the process as exhausted."""
        if isinstance(error, MemoryError) and not self.memory_error_seen:
            self.memory_error_seen = True
            logger.error("the process ran out of memory; liveness fails from now on")

    @classmethod
    def default_memory_limit(cls, setting_mb: int | None) -> int | None:
        """The setting in bytes (0: no check); unset, 90 % of the container's limit, if any."""
        if setting_mb is not None:
            return setting_mb * 1024 * 1024 or None
        limit = container_memory_limit()
        return None if limit is None else int(limit * CGROUP_SHARE)

    async def run(self) -> None:
        self.watching, self.last_tick = True, time.monotonic()
        try:
            await self._watch()
        finally:
            self.watching = False

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick_seconds)
            self.last_tick = time.monotonic()
            self.last_lag = max(0.0, self.last_tick - before - self.tick_seconds)
            if self.last_lag > self.max_loop_lag_seconds > 0:
                logger.warning("the event loop stalled", lag_seconds=round(self.last_lag, 2))
            if self.database_grace_seconds > 0 and self.last_tick >= self._next_probe:
                self._next_probe = self.last_tick + self.database_probe_seconds
                await self._probe_database()

    async def _probe_database(self) -> None:
        try:
            async with asyncio.timeout(self.database_timeout_seconds):
                await self.database_probe()
        except Exception as exc:
            if self.database_failing_since is None:
                self.database_failing_since = time.monotonic()
                logger.warning("liveness: the database is not reachable", error=type(exc).__name__)
        else:
            self.database_failing_since = None

    def checks(self) -> dict[str, str]:
        """``{"event_loop": "ok"|"stalled", "memory": "ok"|"exhausted", "database": "ok"|"unreachable"}``."""
        now = time.monotonic()
        lag = max(self.last_lag, now - self.last_tick - self.tick_seconds)
        stalled = self.watching and self.max_loop_lag_seconds > 0 and lag > self.max_loop_lag_seconds
        resident = resident_bytes() if self.memory_limit_bytes else None
        exhausted = self.memory_error_seen or (
            resident is not None and self.memory_limit_bytes is not None and resident > self.memory_limit_bytes
        )
        failing = self.database_failing_since
        unreachable = failing is not None and now - failing > self.database_grace_seconds
        return {
            "event_loop": STALLED if stalled else OK,
            "memory": EXHAUSTED if exhausted else OK,
            "database": UNREACHABLE if unreachable else OK,
        }


def what_failed(checks: dict[str, str]) -> str | None:
    """The failed checks of a verdict in words (the answer's ``error_message``), None when all are ok."""
    return "; ".join(_FAILURES[name] for name, state in checks.items() if state != OK) or None


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
