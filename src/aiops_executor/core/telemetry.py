"""Metrics and traces together, as the engine, the model runtime and the HTTP layer record them.

One ``Telemetry`` per app (``AppContext.telemetry``); code running without an app (tests, benchmarks) gets a
process-wide default whose metrics nobody scrapes and which does not trace.

Span tree of a run, named after OpenTelemetry's GenAI conventions where they have a name: ``execution`` >
``node_team`` > ``invoke_agent <agent>`` > ``chat <model>`` (one per provider attempt, a CLIENT span current
while the call is made, so that the provider request carries its ``traceparent``) and ``execute_tool <tool>``.
The execution continues the trace of whoever started it: the HTTP request, or -- in a worker process -- the
trace context the job carried over (``core/request_context.origin``). The node teams run as concurrent
asyncio tasks inside LangGraph; each task starts with a copy of its creator's context, and with it the
current span, so every span finds its parent without being handed it. A step or call that fails has
``error.type`` and the status ERROR.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache, partial
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import INVALID_SPAN, Span, StatusCode

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

    def __init__(
        self, tracer: trace.Tracer | None, name: str, attributes: Mapping[str, str | None], observe: Observe
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = {key: value for key, value in attributes.items() if value is not None}
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
                span.set_attribute(tracing.ERROR_TYPE, exc_type.__qualname__ if exc_type is not None else status)
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
        """The span of a run: a child of the current span -- the HTTP request that started the run, or the
        trace context a job carried into a worker -- so that the run continues the caller's trace (and follows
        its sampling decision); a root span when there is none (a run resumed at start-up)."""
        if self.tracer is None:
            return INVALID_SPAN
        return self.tracer.start_span(
            tracing.EXECUTION_SPAN,
            attributes={
                tracing.EXECUTION_ID: execution_id,
                tracing.TEAM_ID: team_id,
                tracing.GEN_AI_CONVERSATION_ID: execution_id,
            },
        )

    def run_context(self, span: Span) -> contextvars.Context | None:
        """A context for the run's task in which ``span`` is current (None: the task copies the caller's)."""
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
                span.set_attribute(tracing.ERROR_TYPE, error_code or status)
                span.set_status(StatusCode.ERROR, status)
            span.end()

    def node_team(self, node_id: str) -> Step:
        return Step(self.tracer, tracing.NODE_TEAM_SPAN, {tracing.NODE_ID: node_id}, self.metrics.node_team)

    def agent(
        self, node_id: str, agent_id: str, agent_name: str | None = None, model: ModelReference | None = None
    ) -> Step:
        """One agent turn: ``invoke_agent <name>``."""
        attributes = {
            tracing.GEN_AI_OPERATION: "invoke_agent",
            tracing.GEN_AI_AGENT_ID: agent_id,
            tracing.GEN_AI_AGENT_NAME: agent_name or agent_id,
            tracing.GEN_AI_REQUEST_MODEL: model.model_id if model else None,
            tracing.PROVIDER: model.provider if model else None,
            tracing.NODE_ID: node_id,
            tracing.AGENT_ID: agent_id,
        }
        name = f"{tracing.AGENT_SPAN} {agent_name or agent_id}"
        return Step(self.tracer, name, attributes, self.metrics.agent)

    def tool_call(self, tool: str, node_id: str, agent_id: str, call_id: str | None = None) -> Step:
        """One tool call: ``execute_tool <tool>``."""
        attributes = {
            tracing.GEN_AI_OPERATION: "execute_tool",
            tracing.GEN_AI_TOOL_NAME: tool,
            tracing.GEN_AI_TOOL_CALL_ID: call_id,
            tracing.GEN_AI_TOOL_TYPE: "function",
            tracing.TOOL_NAME: tool,
            tracing.NODE_ID: node_id,
            tracing.AGENT_ID: agent_id,
        }
        return Step(self.tracer, f"{tracing.TOOL_SPAN} {tool}", attributes, partial(self.metrics.tool_call, tool))

    # -- model calls -----------------------------------------------------------------------------

    def chat(
        self,
        model: ModelDescription,
        endpoint: str | None = None,
        base_url: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> ChatAttempt:
        """One provider attempt, about to be made: ``with telemetry.chat(...) as attempt:`` around the call (the
        span is current inside, so the request carries its trace context), then ``attempt.finish(record)``."""
        return ChatAttempt(self, model, endpoint, base_url, params or {})

    def model_call(self, record: ModelCallRecord, endpoint: str | None) -> None:
        """A provider attempt that was not wrapped in ``chat()``: its metrics, and a span covering its time."""
        attempt = ChatAttempt(self, record.model, endpoint, None, {})
        attempt.start(start_time=time.time_ns() - int(record.latency_ms * 1_000_000))
        attempt.finish(record)

    def failover(self, model: ModelDescription) -> None:
        """A call moves on to another route (or another round) after a failed attempt."""
        self.metrics.failover(model.provider_name, model.model_id)


class ModelReference:
    """The model an agent was configured with, for its span."""

    __slots__ = ("model_id", "provider")

    def __init__(self, provider: str, model_id: str) -> None:
        self.provider = provider
        self.model_id = model_id


def server_of(base_url: str | None) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` of an endpoint's base URL (the scheme's default port if none)."""
    if not base_url:
        return None, None
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    return parts.hostname, port


class ChatAttempt:
    """The span (``chat <model>``, CLIENT) and metrics of one provider attempt.

    ``with attempt:`` makes the span current for the call; a streamed call re-enters ``attempt.current()``
    around each read instead (a generator cannot hold a context across its yields). ``finish`` records the
    outcome: the response's model, id and finish reasons, the usage, and for a failure (a refused call, or a
    stream that broke before it ended) ``error.type`` and the status ERROR. Metrics are recorded inside the
    span, so that the latency histogram's exemplar points at it.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        model: ModelDescription,
        endpoint: str | None,
        base_url: str | None,
        params: Mapping[str, Any],
    ) -> None:
        self._telemetry = telemetry
        self._model = model
        self._endpoint = endpoint
        self._base_url = base_url
        self._params = params
        self._span: Span | None = None
        self._tokens: list[contextvars.Token[otel_context.Context]] = []

    def start(self, start_time: int | None = None) -> None:
        tracer = self._telemetry.tracer
        if tracer is None or self._span is not None:
            return
        model = self._model
        address, port = server_of(self._base_url)
        attributes: dict[str, Any] = {
            tracing.GEN_AI_OPERATION: "chat",
            tracing.GEN_AI_PROVIDER: model.provider_type,
            tracing.GEN_AI_REQUEST_MODEL: model.model_id,
            tracing.SERVER_ADDRESS: address,
            tracing.SERVER_PORT: port,
            tracing.PROVIDER: model.provider_name,
            tracing.ENDPOINT: self._endpoint,
        }
        for name, key in tracing.REQUEST_PARAMETERS.items():
            value = self._params.get(name)
            if isinstance(value, str) and key == tracing.REQUEST_PARAMETERS["stop"]:
                value = [value]
            if isinstance(value, bool | int | float | str) or (
                isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            ):
                attributes[key] = value
        self._span = tracer.start_span(
            f"{tracing.MODEL_SPAN} {model.model_id}",
            kind=trace.SpanKind.CLIENT,
            attributes={key: value for key, value in attributes.items() if value is not None},
            start_time=start_time,
        )

    def __enter__(self) -> ChatAttempt:
        self.start()
        self._attach()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._detach()
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError) and self._span is not None:
            self._span.set_attribute(tracing.ERROR_TYPE, "cancelled")
            self._span.set_status(StatusCode.ERROR, "cancelled")
            self._end()

    @contextmanager
    def current(self) -> Iterator[None]:
        self.start()
        self._attach()
        try:
            yield
        finally:
            self._detach()

    def _attach(self) -> None:
        if self._span is not None:
            self._tokens.append(otel_context.attach(trace.set_span_in_context(self._span)))

    def _detach(self) -> None:
        if self._tokens:
            otel_context.detach(self._tokens.pop())

    def finish(
        self,
        record: ModelCallRecord,
        *,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] = (),
        error_type: str | None = None,
    ) -> None:
        span = self._span
        if span is None:
            self._telemetry.metrics.model_call(record, self._endpoint)
            return
        with trace.use_span(span, end_on_exit=False):
            self._telemetry.metrics.model_call(record, self._endpoint)
        attributes: dict[str, Any] = {
            tracing.GEN_AI_RESPONSE_MODEL: response_model,
            tracing.GEN_AI_RESPONSE_ID: response_id,
            tracing.GEN_AI_RESPONSE_FINISH_REASONS: list(finish_reasons) or None,
            # Left out when unknown (usage the provider did not report, or a model without prices).
            tracing.GEN_AI_INPUT_TOKENS: record.input_tokens,
            tracing.GEN_AI_OUTPUT_TOKENS: record.output_tokens,
            tracing.STATUS: record.outcome,
            tracing.COST: None if record.cost is None else float(record.cost),
        }
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        if record.outcome != SUCCESS:
            span.set_attribute(tracing.ERROR_TYPE, error_type or record.outcome)
            span.set_status(StatusCode.ERROR, record.outcome)
        self._end()

    def _end(self) -> None:
        if self._span is not None:
            self._span.end()
            self._span = None


@lru_cache(maxsize=1)
def default_telemetry() -> Telemetry:
    """For runs outside an app: counts into a registry nobody scrapes, does not trace."""
    return Telemetry()
