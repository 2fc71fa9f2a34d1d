"""What each attempt at an endpoint passes before it is made, and reports once it is done.

Before: the endpoint's circuit breaker (an open one skips the endpoint: the call fails over to the next), then
its rpm/tpm limits (the call waits for room). During: one of the endpoint's concurrent-call slots. After: the
attempt's outcome goes to the breaker (``Admission.call``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.runtime.breaker import CircuitPass, Outcome, Verdict
from aiops_executor.llm.runtime.config import ModelConfig
from aiops_executor.llm.runtime.errors import Failure, FailureKind
from aiops_executor.llm.runtime.estimate import CallSize
from aiops_executor.llm.runtime.routes import Route
from aiops_executor.llm.runtime.routing import endpoint_failed
from aiops_executor.llm.runtime.state import RuntimeState


@dataclass(frozen=True)
class CircuitOpen(Failure):
    """An endpoint not called because its circuit breaker is open (or half-open with its probe under way)."""


def circuit_open(circuit: CircuitPass) -> CircuitOpen:
    if circuit.verdict is Verdict.probing:
        why = "its circuit breaker is half-open and its one probe call is under way"
    else:
        why = f"its circuit breaker is open after repeated failures (next probe call in {circuit.seconds:.0f} s)"
    return CircuitOpen(FailureKind.unreachable, f"not called: {why}")


@dataclass(frozen=True)
class Admission:
    """An attempt let through to its route (``circuit``: its endpoint breaker's pass; None without an endpoint)."""

    state: RuntimeState
    route: Route
    model: ModelConfig
    circuit: CircuitPass | None

    @asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Holds one of the endpoint's concurrent-call slots while the call runs, then tells the endpoint's
        breaker how it went: a failure about the endpoint counts against it, one about the request or the key
        says nothing, a call that returned (even an empty stream: the endpoint answered) is a success."""
        try:
            async with self.state.slot(self.route.endpoint):
                yield
        except (asyncio.CancelledError, GeneratorExit):
            self.abandon()
            raise
        except Exception as exc:
            failure = adapter_for(self.model.provider_type).classify(exc)
            await self._report(failure, Outcome.failed if endpoint_failed(failure) else Outcome.nothing)
            raise
        await self._report(None, Outcome.succeeded)

    def abandon(self) -> None:
        if self.route.endpoint is not None and self.circuit is not None:
            self.state.circuit_abandon(self.route.endpoint, self.circuit)

    async def _report(self, failure: Failure | None, outcome: Outcome) -> None:
        if self.route.endpoint is not None and self.circuit is not None:
            provider = self.model.provider_name
            await self.state.circuit_record(self.route.endpoint, provider, self.circuit, failure, outcome)


async def admit(
    state: RuntimeState,
    route: Route,
    model: ModelConfig,
    failures: list[tuple[Route, Failure]],
    size: Callable[[], CallSize],
) -> Admission | None:
    """The attempt at ``route``, once its endpoint's limits leave room for it (``size``: the call's, measured only
    for a tpm limit); None when its endpoint's breaker keeps it out (said once per endpoint in ``failures``)."""
    endpoint = route.endpoint
    if endpoint is None:
        return Admission(state, route, model, None)
    circuit = await state.circuit_admit(endpoint, model.provider_name)
    if not circuit.goes:
        if not any(isinstance(f, CircuitOpen) and r.endpoint == endpoint for r, f in failures):
            failures.append((route, circuit_open(circuit)))
        return None
    admission = Admission(state, route, model, circuit)
    try:
        await state.wait_for_rate(endpoint, lambda: size().tokens_typical)
    except asyncio.CancelledError:
        admission.abandon()
        raise
    return admission
