"""The long-lived objects one service process runs with, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from aiops_executor.core.cache import ConfigCache
from aiops_executor.core.crypto import EnvelopeCipher
from aiops_executor.core.db import Database
from aiops_executor.core.rate_limit import RateLimits
from aiops_executor.core.settings import ResolvedSecrets, Settings, resolve_secrets
from aiops_executor.core.telemetry import Telemetry

if TYPE_CHECKING:
    from aiops_executor.executions.manager import ExecutionManager
    from aiops_executor.llm.runtime.service import ModelRuntime


@dataclass
class AppContext:
    settings: Settings
    secrets: ResolvedSecrets
    database: Database
    cipher: EnvelopeCipher
    config_cache: ConfigCache
    telemetry: Telemetry

    @classmethod
    def build(cls, settings: Settings, telemetry: Telemetry | None = None) -> AppContext:
        secrets = resolve_secrets(settings)
        return cls(
            settings=settings,
            secrets=secrets,
            database=Database(settings.resolved_database_url),
            cipher=EnvelopeCipher(secrets.master_keys, secrets.master_key_id),
            config_cache=ConfigCache(ttl_seconds=settings.config_cache_ttl_seconds),
            telemetry=telemetry or Telemetry.from_settings(settings),
        )

    @cached_property
    def model_runtime(self) -> ModelRuntime:
        """Turns stored LLM configuration into chat models; holds the process's failover state."""
        from aiops_executor.llm.runtime.service import ModelRuntime

        return ModelRuntime(self)

    @cached_property
    def executions(self) -> ExecutionManager:
        """Runs executions in the background of this process."""
        from aiops_executor.executions.manager import ExecutionManager

        return ExecutionManager(self)

    @cached_property
    def rate_limits(self) -> RateLimits:
        """The process's rate limiters and sign-in throttle (in memory)."""
        return RateLimits(self.settings)

    async def close(self) -> None:
        await self.database.dispose()
        await self.telemetry.close()
