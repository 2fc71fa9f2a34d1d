"""Process-wide failover memory (``RuntimeState``): cool-downs, in-flight limits, rpm/tpm limits, circuit breakers
and exhausted credentials."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from aiops_executor.core.metrics import Metrics
from aiops_executor.llm.runtime.breaker import BreakerPolicy, Change, CircuitPass, CircuitState, LocalBreakers, Outcome
from aiops_executor.llm.runtime.config import CredentialConfig, EndpointConfig, ModelBinding
from aiops_executor.llm.runtime.errors import Failure
from aiops_executor.llm.runtime.limits import LocalRateLimiter, RedisRateLimiter, limited
from aiops_executor.llm.runtime.routes import Route, cooldown_keys, plan_candidates

logger = structlog.get_logger(__name__)

# A half-open breaker's probe may take the endpoint's timeouts and this much more before another call may probe
# in its place (its process may have died; see ``probe_lease``): a probe streaming for longer may have company.
PROBE_GRACE_SECONDS = 5.0

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
    """Process-wide failover memory: cool-downs, in-flight and rpm/tpm limits and circuit breakers, shared by every
    model instance.

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
    # Endpoints' rpm/tpm limits count over this window; their circuit breakers follow the policy; the breakers'
    # states and changes go to these metrics.
    rate_limit_window_seconds: float = 60.0
    breaker_policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    metrics: Metrics | None = None
    rate_limiter: LocalRateLimiter | RedisRateLimiter = field(init=False)
    breakers: LocalBreakers = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limiter = LocalRateLimiter(self.rate_limit_window_seconds)
        self.breakers = LocalBreakers(self.breaker_policy)

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

    async def wait_for_rate(self, endpoint: EndpointConfig, tokens: Callable[[], int]) -> None:
        """Returns once a call to ``endpoint`` fits its rpm/tpm limits (``tokens``: the call's size, measured only
        for a tpm limit); cancellable while it waits."""
        if limited(endpoint):
            await self.rate_limiter.wait(endpoint, tokens() if endpoint.tpm is not None else 0)

    async def circuit_admit(self, endpoint: EndpointConfig, provider: str) -> CircuitPass:
        """Whether the endpoint's circuit breaker lets a call through now (see ``breaker``)."""
        circuit = await self._admit_circuit(endpoint)
        self._circuit_seen(endpoint, provider, circuit.state, "its cool-down ended" if circuit.opened_probe else None)
        return circuit

    async def circuit_record(
        self, endpoint: EndpointConfig, provider: str, circuit: CircuitPass, failure: Failure | None, outcome: Outcome
    ) -> None:
        """Tells the endpoint's breaker how a call it let through went (``failure``: None when it succeeded)."""
        retry_after = failure.retry_after if failure is not None else None
        change = await self._record_circuit(endpoint, circuit, outcome, retry_after)
        self._circuit_seen(endpoint, provider, change.state, change.reason, change.cooldown, failure)

    def circuit_abandon(self, endpoint: EndpointConfig, circuit: CircuitPass) -> None:
        """A call the breaker let through ended without an outcome (cancelled): if it was the probe, the next
        call probes instead."""
        if circuit.probe is not None:
            self.breakers.abandon(endpoint.id, circuit.probe)

    async def circuit_states(self, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CircuitState]:
        return self.breakers.states(endpoint_ids)

    async def _admit_circuit(self, endpoint: EndpointConfig) -> CircuitPass:
        return self.breakers.admit(endpoint.id, self.probe_lease(endpoint))

    async def _record_circuit(
        self, endpoint: EndpointConfig, circuit: CircuitPass, outcome: Outcome, retry_after: float | None
    ) -> Change:
        return self.breakers.record(endpoint.id, circuit.probe, outcome, retry_after)

    def _circuit_seen(
        self,
        endpoint: EndpointConfig,
        provider: str,
        state: CircuitState,
        change: str | None = None,
        cooldown: float | None = None,
        failure: Failure | None = None,
    ) -> None:
        """The state a breaker was found in (the metrics' gauge), and a change of it (logged and counted)."""
        if self.metrics is not None:
            self.metrics.circuit(provider, endpoint.name, state.value, changed=change is not None)
        if change is None:
            return
        where = {"provider": provider, "endpoint": endpoint.name, "circuit_state": state.value, "reason": change}
        if state is CircuitState.open:
            logger.warning(
                "circuit breaker opened: calls skip the endpoint until a probe call succeeds",
                **where,
                cooldown_seconds=None if cooldown is None else round(cooldown, 1),
                error=failure.message if failure is not None else None,
            )
        elif state is CircuitState.half_open:
            logger.info("circuit breaker half-open: one probe call goes to the endpoint", **where)
        else:
            logger.info("circuit breaker closed: calls go to the endpoint again", **where)

    def probe_lease(self, endpoint: EndpointConfig) -> float:
        """How long a half-open breaker's probe may take before another call may probe in its place: the wait for
        room under the endpoint's rpm/tpm limits, its timeouts, and a grace."""
        waits = self.rate_limit_window_seconds if limited(endpoint) else 0.0
        return waits + endpoint.timeout_connect + endpoint.timeout_read + PROBE_GRACE_SECONDS

    def reset(self) -> None:
        self._cooling.clear()
        self.breakers.reset()
