"""OpenTelemetry tracing: the tracer provider a process exports with, and span attribute names.

Tracing is off unless ``AIOPS_OTLP_ENDPOINT`` is set (or a test hands in an exporter): the tracer is then
OpenTelemetry's no-op tracer and instrumented code skips span work altogether. The provider is the app's own
(never the global one), like the metrics registry, so two apps in one process -- tests -- trace apart.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from aiops_executor import __version__
from aiops_executor.core.settings import Settings

TRACER_NAME = "aiops_executor"
OTLP_TRACES_PATH = "/v1/traces"

# Span names: OpenTelemetry's GenAI conventions where they have one (``{operation} {agent, tool or model}``).
EXECUTION_SPAN = "execution"
NODE_TEAM_SPAN = "node_team"
AGENT_SPAN = "invoke_agent"
TOOL_SPAN = "execute_tool"
MODEL_SPAN = "chat"

# OpenTelemetry semantic conventions (GenAI, server, error).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
# Model parameters as the conventions name them (``gen_ai.request.<name>``); others are not recorded.
REQUEST_PARAMETERS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
}

# Span attributes (besides OpenTelemetry's semantic conventions for HTTP and GenAI).
EXECUTION_ID = "aiops.execution.id"
TEAM_ID = "aiops.team.id"
NODE_ID = "aiops.node.id"
AGENT_ID = "aiops.agent.id"
TOOL_NAME = "aiops.tool.name"
STATUS = "aiops.status"
ERROR_CODE = "aiops.error_code"
DURATION_MS = "aiops.duration_ms"
PROVIDER = "aiops.provider"
ENDPOINT = "aiops.endpoint"
COST = "aiops.cost"
REQUEST_ID = "aiops.request_id"


def otlp_traces_url(endpoint: str) -> str:
    """``AIOPS_OTLP_ENDPOINT`` is the collector's base URL (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` is)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(OTLP_TRACES_PATH) else base + OTLP_TRACES_PATH


def build_tracer_provider(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The provider to trace with, or None when tracing is off.

    ``exporter`` (tests: an in-memory exporter) receives each span synchronously as it ends; the OTLP exporter
    sends in batches from a background thread. Headers, timeout and TLS come from the standard
    ``OTEL_EXPORTER_OTLP_*`` environment variables, which the exporter reads itself.
    """
    if not settings.otlp_endpoint and exporter is None:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name, "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        otlp = OTLPSpanExporter(endpoint=otlp_traces_url(settings.otlp_endpoint))
        provider.add_span_processor(BatchSpanProcessor(otlp))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider
