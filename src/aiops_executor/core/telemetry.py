"""Metrics and traces together, as the engine, the model runtime and the HTTP layer record them.

One ``Telemetry`` per app (``AppContext.telemetry``); code running without an app (tests, benchmarks) gets a
process-wide default whose metrics nobody scrapes and which does not trace.

Span tree of a run: ``execution`` (a root of its own, linked to the HTTP request that started it) >
``node_team`` > ``agent`` > ``chat`` (one per provider attempt) and ``tool``. The node teams run as concurrent
asyncio tasks inside LangGraph; each task starts with a copy of its creator's context, and with it the current
span, so every span finds its parent without being handed it.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from functools import lru_cache, partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import INVALID_SPAN, Link, Span, StatusCode

from aiops_executor import __version__
from aiops_executor.core import tracing
from aiops_executor.core.metrics import Metrics, ModelCallRecord, ModelDescription

if TYPE_CHECKING:
    from aiops_executor.core.settings import Settings

SUCCESS = "success"

Observe = Callable[[str, float], None]


class Step:
    """A timed piece of a run (node team, agent turn, tool call): a duration metric by status and, when
    tracing, a span that is current while the step runs. Set ``status`` before leaving; an exception leaving
    the block makes it ``error`` (``cancelled`` for a cancellation)."""

    __slots__ = ("_attributes", "_name", "_observe", "_span", "_started", "_token", "_tracer", "status")

    def __init__(self, tracer: trace.Tracer | None, name: str, attributes: dict[str, str], observe: Observe) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes
        self._observe = observe
        self._span: Span | None = None
        self._token: contextvars.Token[otel_context.Context] | None = None
        self._started = 0.0
        self.status: str | None = None

    def __enter__(self) -> Step:
        if self._tracer is not None:
            self._span = self._tracer.start_span(self._name, attributes=self._attributes)
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.status = "cancelled" if issubclass(exc_type, asyncio.CancelledError) else "error"
        status = self.status or SUCCESS
        self._observe(status, time.perf_counter() - self._started)
        span = self._span
        if span is not None and self._token is not None:
            otel_context.detach(self._token)
            span.set_attribute(tracing.STATUS, status)
            if exc is not None and exc_type is not None and not issubclass(exc_type, asyncio.CancelledError):
                span.record_exception(exc)
            if status != SUCCESS:
                span.set_status(StatusCode.ERROR, status)
            span.end()


class Telemetry:
    def __init__(self, metrics: Metrics | None = None, provider: TracerProvider | None = None) -> None:
        self.metrics = metrics or Metrics()
        self.provider = provider
        # None when not tracing: instrumented code then skips span work entirely.
        self.tracer: trace.Tracer | None = (
            provider.get_tracer(tracing.TRACER_NAME, __version__) if provider is not None else None
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, span_exporter: SpanExporter | None = None) -> Telemetry:
        return cls(Metrics(), tracing.build_tracer_provider(settings, span_exporter))

    @property
    def tracing(self) -> bool:
        return self.tracer is not None

    async def close(self) -> None:
        """Sends the spans still buffered (OTLP) and stops exporting; off the event loop, as a slow collector
        can take a while."""
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)

    # -- a run -----------------------------------------------------------------------------------

    def start_execution(self, execution_id: str, team_id: str) -> Span:
        """The root span of a run. A run outlives the request that started it, so it begins a trace of its own,
        linked to the request's."""
        if self.tracer is None:
            return INVALID_SPAN
        caller = trace.get_current_span().get_span_context()
        return self.tracer.start_span(
            tracing.EXECUTION_SPAN,
            context=otel_context.Context(),
            attributes={tracing.EXECUTION_ID: execution_id, tracing.TEAM_ID: team_id},
            links=[Link(caller)] if caller.is_valid else None,
        )

    def run_context(self, span: Span) -> contextvars.Context | None:
        """A context for the run's task in which ``span`` is current (None: the task copies the caller's).
        Also when the run is not sampled: its steps must not land in the trace of the request that started it."""
        if self.tracer is None:
            return None
        context = contextvars.copy_context()
        context.run(otel_context.attach, trace.set_span_in_context(span))
        return context

    def finish_execution(self, span: Span, status: str, seconds: float, error_code: str | None = None) -> None:
        self.metrics.execution(status, seconds)
        if span.is_recording():
            span.set_attribute(tracing.STATUS, status)
            span.set_attribute(tracing.DURATION_MS, round(seconds * 1000, 1))
            if error_code:
                span.set_attribute(tracing.ERROR_CODE, error_code)
            if status != SUCCESS:
                span.set_status(StatusCode.ERROR, status)
            span.end()

    def node_team(self, node_id: str) -> Step:
        return Step(self.tracer, tracing.NODE_TEAM_SPAN, {tracing.NODE_ID: node_id}, self.metrics.node_team)

    def agent(self, node_id: str, agent_id: str) -> Step:
        attributes = {tracing.NODE_ID: node_id, tracing.AGENT_ID: agent_id}
        return Step(self.tracer, tracing.AGENT_SPAN, attributes, self.metrics.agent)

    def tool_call(self, tool: str, node_id: str, agent_id: str) -> Step:
        attributes = {tracing.TOOL_NAME: tool, tracing.NODE_ID: node_id, tracing.AGENT_ID: agent_id}
        return Step(self.tracer, tracing.TOOL_SPAN, attributes, partial(self.metrics.tool_call, tool))

    # -- model calls -----------------------------------------------------------------------------

    def model_call(self, record: ModelCallRecord, endpoint: str | None) -> None:
        """One provider attempt, just finished: metrics, and a span covering it under the current span."""
        self.metrics.model_call(record)
        if self.tracer is None:
            return
        model = record.model
        end = time.time_ns()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": model.provider_type,
            "gen_ai.request.model": model.model_id,
            "gen_ai.usage.input_tokens": record.input_tokens,
            "gen_ai.usage.output_tokens": record.output_tokens,
            tracing.PROVIDER: model.provider_name,
            tracing.STATUS: record.outcome,
            tracing.COST: None if record.cost is None else float(record.cost),
            tracing.ENDPOINT: endpoint,
        }
        # Left out when unknown (no endpoint; usage the provider did not report, or a model without prices).
        attributes = {key: value for key, value in attributes.items() if value is not None}
        span = self.tracer.start_span(
            f"{tracing.MODEL_SPAN} {model.model_id}",
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=end - int(record.latency_ms * 1_000_000),
        )
        if record.outcome != SUCCESS:
            span.set_status(StatusCode.ERROR, record.outcome)
        span.end(end_time=end)

    def failover(self, model: ModelDescription) -> None:
        """A call moves on to another route (or another round) after a failed attempt."""
        self.metrics.failover(model.provider_name, model.model_id)


@lru_cache(maxsize=1)
def default_telemetry() -> Telemetry:
    """For runs outside an app: counts into a registry nobody scrapes, does not trace."""
    return Telemetry()
