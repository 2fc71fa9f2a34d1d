"""The long-lived core objects one service process runs with, built once at start-up.

Only core resources live here; ``aiops_executor.services.ServiceContext`` adds the domain services (model
runtime, execution manager) on top, so that ``core/`` imports no domain package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Self

from aiops_executor.core.cache import ConfigCache
from aiops_executor.core.cache_bus import ConfigChangeBus
from aiops_executor.core.crypto import EnvelopeCipher
from aiops_executor.core.db import Database
from aiops_executor.core.liveness import Liveness
from aiops_executor.core.rate_limit import RateLimits
from aiops_executor.core.rate_limit_redis import build_rate_limits
from aiops_executor.core.settings import ResolvedSecrets, Settings, resolve_secrets
from aiops_executor.core.telemetry import Telemetry


@dataclass
class AppContext:
    settings: Settings
    secrets: ResolvedSecrets
    database: Database
    cipher: EnvelopeCipher
    config_cache: ConfigCache
    telemetry: Telemetry
    config_changes: ConfigChangeBus | None = field(default=None, init=False)
    liveness: Liveness = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.liveness = Liveness(
            tick_seconds=settings.liveness_tick_seconds,
            max_loop_lag_seconds=settings.liveness_max_loop_lag_seconds,
            memory_limit_bytes=Liveness.default_memory_limit(settings.liveness_memory_limit_mb),
            database_probe=self.ping_database,
            database_probe_seconds=settings.liveness_database_probe_seconds,
            database_grace_seconds=settings.liveness_database_grace_seconds,
            database_timeout_seconds=settings.readiness_timeout_seconds,
        )

    @classmethod
    def build(cls, settings: Settings, telemetry: Telemetry | None = None) -> Self:
        secrets = resolve_secrets(settings)
        return cls(
            settings=settings,
            secrets=secrets,
            database=Database(
                settings.resolved_database_url,
                pool_size=settings.database_pool_size,
                max_overflow=settings.database_max_overflow,
            ),
            cipher=EnvelopeCipher(secrets.master_keys, secrets.master_key_id),
            config_cache=ConfigCache(ttl_seconds=settings.config_cache_ttl_seconds),
            telemetry=telemetry or Telemetry.from_settings(settings),
        )

    @cached_property
    def rate_limits(self) -> RateLimits:
        """The rate limiters and sign-in throttle: shared through Redis when ``AIOPS_REDIS_URL`` is set, else
        in this process. Their Redis connection (``rate_limits.redis``) also serves the model runtime."""
        return build_rate_limits(self.settings)

    async def open(self) -> None:
        """Starts what the process shares with the others of its deployment: with several processes
        (PostgreSQL and Redis), configuration changes reach every process's cache at once."""
        if self.settings.redis_url and not self.settings.is_embedded_database and self.config_changes is None:
            self.config_changes = ConfigChangeBus(self.settings.redis_url, self.config_cache)
            await self.config_changes.start()

    async def ping_database(self) -> None:
        """The database answers (raises when it does not); the current one, should it be replaced."""
        await self.database.probe()

    async def queue_status(self) -> dict[str, int] | None:
        """``{"depth", "live_workers"}`` of the job queue runs wait in, None without one (a service context
        has one on PostgreSQL)."""
        return None

    async def close(self) -> None:
        if self.config_changes is not None:
            await self.config_changes.close()
            self.config_changes = None
        if "rate_limits" in self.__dict__:  # built on first use; closes its Redis connection
            await self.rate_limits.close()
        await self.database.dispose()
        await self.telemetry.close()
