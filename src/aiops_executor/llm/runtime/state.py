"""Process-wide failover memory (``RuntimeState``): cool-downs, in-flight limits and exhausted credentials."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiops_executor.llm.runtime.config import CredentialConfig, EndpointConfig, ModelBinding
from aiops_executor.llm.runtime.routes import Route, cooldown_keys, plan_candidates

CredentialFingerprint = tuple[str, str | None, str | None, int | None]


def credential_fingerprint(credential: CredentialConfig) -> CredentialFingerprint:
    """The parts of a credential whose change (a key re-entered, a new quota limit) can make it usable again."""
    return (
        credential.api_key_encrypted,
        credential.secret_key_encrypted,
        credential.access_token_encrypted,
        credential.quota_limit,
    )


@dataclass
class RuntimeState:
    """Process-wide failover memory: cool-downs and in-flight limits, shared by every model instance.

    Kept in this process; ``SharedRuntimeState`` overrides the async methods to share them across processes.
    """

    cooldown_seconds: float = 30.0
    max_concurrency_per_endpoint: int = 16
    _cooling: dict[tuple[str, uuid.UUID], float] = field(default_factory=dict)
    _semaphores: dict[uuid.UUID, asyncio.Semaphore] = field(default_factory=dict)
    # Credentials that reached their quota or could not be decrypted since their configuration was loaded,
    # with the fingerprint they had then: re-entered keys or a new quota limit make a credential usable again.
    exhausted: dict[uuid.UUID, CredentialFingerprint] = field(default_factory=dict)
    failovers: int = 0
    # The structured-output strategy that last worked for each model (by model row id), tried first next time.
    structured_output_strategy: dict[uuid.UUID, str] = field(default_factory=dict)

    def exhaust(self, credential_id: uuid.UUID, fingerprint: CredentialFingerprint) -> None:
        self.exhausted[credential_id] = fingerprint

    def is_exhausted(self, credential: CredentialConfig) -> bool:
        return self.exhausted.get(credential.id) == credential_fingerprint(credential)

    def cool_down(self, kind: str, key: uuid.UUID, seconds: float | None = None) -> None:
        self._cooling[(kind, key)] = time.monotonic() + (seconds if seconds is not None else self.cooldown_seconds)

    def cooling_until(self, route: Route) -> float:
        now = time.monotonic()
        until = max((self._cooling.get(key, 0.0) for key in cooldown_keys(route)), default=0.0)
        return until if until > now else 0.0

    def cooldown_left(self, kind: str, key: uuid.UUID) -> float | None:
        """Seconds left of a cool-down (None: none), as far as this process knows (see ``load_cooldowns``)."""
        left = self._cooling.get((kind, key), 0.0) - time.monotonic()
        return left if left > 0 else None

    async def load_cooling(self, binding: ModelBinding) -> None:
        """Brings in the cool-downs other processes set on the binding's routes."""
        routes = plan_candidates(binding)
        await self.load_cooldowns({key for route in routes for key in cooldown_keys(route)})

    async def load_cooldowns(self, keys: set[tuple[str, uuid.UUID]]) -> None:
        """Brings in the cool-downs other processes set on these keys; nothing to do in memory."""

    async def share_cool_down(self, kind: str, key: uuid.UUID, seconds: float | None = None) -> None:
        """``cool_down``, and for a shared state the same in every process."""
        self.cool_down(kind, key, seconds)

    @asynccontextmanager
    async def slot(self, endpoint: EndpointConfig | None) -> AsyncIterator[None]:
        """Holds one of the endpoint's concurrent-call slots while the call runs (no limit without one)."""
        semaphore = self.semaphore(endpoint)
        if semaphore is None:
            yield
            return
        async with semaphore:
            yield

    def semaphore(self, endpoint: EndpointConfig | None) -> asyncio.Semaphore | None:
        if endpoint is None:
            return None
        semaphore = self._semaphores.get(endpoint.id)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.max_concurrency_per_endpoint)
            self._semaphores[endpoint.id] = semaphore
        return semaphore

    def reset(self) -> None:
        self._cooling.clear()
