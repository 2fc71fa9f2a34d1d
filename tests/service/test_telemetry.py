"""Metrics (``GET /metrics``) and traces (OpenTelemetry spans) of HTTP requests, runs and model calls."""

from __future__ import annotations

import asyncio
import gzip
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.app import create_app
from aiops_executor.core import tracing
from aiops_executor.core.settings import Settings
from aiops_executor.core.telemetry import Telemetry
from aiops_executor.engine import CompiledTeam, ExecutionRun, RunRequest, RunStatus, Usage
from aiops_executor.llm.runtime.config import CredentialConfig, DecryptedSecrets, ModelBinding
from aiops_executor.llm.runtime.failover import FailoverChatModel
from aiops_executor.llm.runtime.state import RuntimeState
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login, make_settings
from tests.engine_support import BROKEN, agent, node, team, tool_registry
from tests.executions.test_executions_api import TASK, make_team
from tests.helpers import API, add_simulator
from tests.llm.test_runtime_clients import endpoint, model
from tests.llm.test_runtime_failover import DEAD_URL, credential
from tests.mock_providers import OPENAI_KEY


@pytest.fixture
def backend() -> str:
    # What is measured here does not depend on the database; both backends are covered elsewhere.
    return "sqlite"


def traced(exporter: InMemorySpanExporter) -> Telemetry:
    return Telemetry.from_settings(Settings(_env_file=None), span_exporter=exporter)  # type: ignore[call-arg]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def total(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in scrape.items() if n == name and wanted <= have)


def by_id(spans: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans}


def parent_of(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return spans.get(span.parent.span_id) if span.parent is not None else None


def named(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == prefix or s.name.startswith(prefix + " ")]


def attr(span: ReadableSpan | None, key: str) -> Any:
    assert span is not None and span.attributes is not None
    return span.attributes.get(key)


async def unused_key(config: CredentialConfig) -> DecryptedSecrets:
    return DecryptedSecrets("sk-unused")


class RuntimeSimulatorSource:
    """The runtime's failover model over the offline simulator: model calls go through ``FailoverChatModel``.
    Provider ``broken`` is an OpenAI endpoint nothing listens on: every attempt fails."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.state = RuntimeState()

    async def chat_model(self, provider: str, model_id: str, overrides: dict[str, Any]) -> FailoverChatModel:
        if provider == BROKEN:
            binding = ModelBinding(
                model("openai", model_id, provider_name=provider), (endpoint(DEAD_URL),), (credential("k"),)
            )
        else:
            binding = ModelBinding(model("simulator", model_id, provider_name=provider), (), ())
        return FailoverChatModel(
            binding=binding, params={}, state=self.state, open_secrets=unused_key, telemetry=self.telemetry
        )

    def usage(self) -> Usage:
        return Usage()

    def halt(self) -> None:
        return None


# ------------------------------------------------------------------------------------------ engine


async def test_a_run_is_one_trace_nested_execution_node_team_agent_model_and_tool() -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    # Three node teams at once: each one's tool waits until all three are inside it, so they really overlap.
    barrier = asyncio.Barrier(3)
    nodes = [node(n, [agent("a1", tools=("rendezvous",)), agent("a2", tools=())]) for n in ("a", "b", "c")]
    run = ExecutionRun(
        CompiledTeam(team(nodes, strategy="parallel"), tool_registry(barrier)),
        RunRequest("exec-1", "team-1", "Why is checkout slow?"),
        RuntimeSimulatorSource(telemetry),
        telemetry=telemetry,
    )
    _ = [event async for event in run.events()]
    assert run.outcome is not None and run.outcome.status is RunStatus.success

    spans = exporter.get_finished_spans()
    index = by_id(spans)
    [execution] = named(spans, tracing.EXECUTION_SPAN)
    assert execution.parent is None and not execution.links
    assert attr(execution, tracing.EXECUTION_ID) == "exec-1" and attr(execution, tracing.TEAM_ID) == "team-1"
    assert attr(execution, tracing.STATUS) == "success" and execution.status.status_code is not StatusCode.ERROR
    assert {s.context.trace_id for s in spans} == {execution.context.trace_id}, "one trace per run"

    node_teams = named(spans, tracing.NODE_TEAM_SPAN)
    assert sorted(attr(s, tracing.NODE_ID) for s in node_teams) == ["a", "b", "c"]
    assert all(parent_of(s, index) is execution for s in node_teams)

    agents = named(spans, tracing.AGENT_SPAN)
    assert len(agents) == 6
    for span in agents:
        parent = parent_of(span, index)
        assert parent in node_teams and attr(parent, tracing.NODE_ID) == attr(span, tracing.NODE_ID)
        assert attr(span, tracing.STATUS) == "success"

    tools = named(spans, tracing.TOOL_SPAN)
    assert len(tools) == 3
    for span in tools:
        parent = parent_of(span, index)
        assert parent in agents
        assert (attr(parent, tracing.NODE_ID), attr(parent, tracing.AGENT_ID)) == (
            attr(span, tracing.NODE_ID),
            "a1",
        )
        assert attr(span, tracing.TOOL_NAME) == "rendezvous" and attr(span, tracing.STATUS) == "success"

    # Children lie within their parents' time.
    for span in [*node_teams, *agents, *tools]:
        parent = parent_of(span, index)
        assert parent is not None and parent.start_time is not None and parent.end_time is not None
        assert span.start_time is not None and span.end_time is not None
        assert parent.start_time <= span.start_time and span.end_time <= parent.end_time

    # Model calls: every agent's own, the node reports under their node team, the summary under the execution.
    chats = named(spans, tracing.MODEL_SPAN)
    parents = [parent_of(s, index) for s in chats]
    assert all(p is not None for p in parents)
    for span in agents:
        assert any(p is span for p in parents), "each agent made at least one model call"
    assert sum(p in node_teams for p in parents) == 3 and sum(p is execution for p in parents) == 1
    for span in chats:
        assert span.kind is SpanKind.CLIENT
        assert attr(span, "gen_ai.request.model") == "sim-1" and attr(span, tracing.PROVIDER) == "local-sim"
        assert attr(span, tracing.STATUS) == "success"
        assert attr(span, "gen_ai.usage.input_tokens") > 0 and attr(span, "gen_ai.usage.output_tokens") > 0

    # The same run in the metrics.
    scrape = samples(telemetry.metrics.render().decode())
    assert value(scrape, "aiops_executions_total", status="success") == 1
    assert value(scrape, "aiops_execution_duration_seconds_count", status="success") == 1
    assert value(scrape, "aiops_node_team_duration_seconds_count", status="success") == 3
    assert value(scrape, "aiops_agent_duration_seconds_count", status="success") == 6
    assert value(scrape, "aiops_tool_calls_total", tool="rendezvous", outcome="success") == 3
    assert value(scrape, "aiops_tool_call_duration_seconds_count", tool="rendezvous", outcome="success") == 3
    calls = total(scrape, "aiops_model_calls_total", provider="local-sim", model="sim-1", outcome="success")
    assert calls == len(chats)
    assert value(scrape, "aiops_model_tokens_total", provider="local-sim", model="sim-1", type="input") == sum(
        attr(s, "gen_ai.usage.input_tokens") for s in chats
    )
    assert value(scrape, "aiops_model_cost_usd_total", provider="local-sim", model="sim-1") > 0


async def test_a_failed_agent_and_node_team_are_marked_on_their_spans() -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    spec = team([node("ok"), node("down", [agent("a1", provider=BROKEN)])], strategy="parallel")

    run = ExecutionRun(
        CompiledTeam(spec, tool_registry()),
        RunRequest("e", "t", "task"),
        RuntimeSimulatorSource(telemetry),
        telemetry=telemetry,
    )
    _ = [event async for event in run.events()]

    spans = exporter.get_finished_spans()
    index = by_id(spans)
    failed_agent = next(s for s in named(spans, tracing.AGENT_SPAN) if attr(s, tracing.NODE_ID) == "down")
    assert attr(failed_agent, tracing.STATUS) == "failed" and failed_agent.status.status_code is StatusCode.ERROR
    failed_node = next(s for s in named(spans, tracing.NODE_TEAM_SPAN) if attr(s, tracing.NODE_ID) == "down")
    assert attr(failed_node, tracing.STATUS) == "failed"
    unreachable = [s for s in named(spans, tracing.MODEL_SPAN) if attr(s, tracing.STATUS) == "unreachable"]
    assert unreachable and all(parent_of(s, index) is failed_agent for s in unreachable)
    assert all(s.status.status_code is StatusCode.ERROR for s in unreachable)

    scrape = samples(telemetry.metrics.render().decode())
    assert value(scrape, "aiops_agent_duration_seconds_count", status="failed") == 1
    assert value(scrape, "aiops_node_team_duration_seconds_count", status="failed") == 1
    assert value(scrape, "aiops_node_team_duration_seconds_count", status="success") == 1
    assert total(scrape, "aiops_model_calls_total", provider=BROKEN, model="sim-1", outcome="unreachable") >= 1


async def test_a_failover_is_counted_and_each_attempt_is_a_span(openai_mock: MockLLMServer) -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    dead = endpoint(DEAD_URL, name="dead", priority=1)
    live = endpoint(openai_mock.client_base_url, name="live", priority=2)
    binding = ModelBinding(model("openai", "gpt-4o-mini", provider_name="cloud"), (live, dead), (credential("k"),))

    async def open_key(config: CredentialConfig) -> DecryptedSecrets:
        return DecryptedSecrets(OPENAI_KEY)

    chat = FailoverChatModel(binding=binding, state=RuntimeState(), open_secrets=open_key, telemetry=telemetry)
    tracer = telemetry.tracer
    assert tracer is not None
    with tracer.start_as_current_span("caller") as caller:
        await chat.ainvoke("hi")

    attempts = named(exporter.get_finished_spans(), tracing.MODEL_SPAN)
    assert [(attr(s, tracing.ENDPOINT), attr(s, tracing.STATUS)) for s in attempts] == [
        ("dead", "unreachable"),
        ("live", "success"),
    ]
    assert all(s.parent is not None and s.parent.span_id == caller.get_span_context().span_id for s in attempts)
    assert attr(attempts[1], "gen_ai.usage.output_tokens") > 0 and attr(attempts[1], "gen_ai.provider.name") == "openai"

    scrape = samples(telemetry.metrics.render().decode())
    labels = {"provider": "cloud", "model": "gpt-4o-mini"}
    assert value(scrape, "aiops_model_failovers_total", **labels) == 1
    assert value(scrape, "aiops_model_calls_total", outcome="unreachable", endpoint="dead", **labels) == 1
    assert value(scrape, "aiops_model_calls_total", outcome="success", endpoint="live", **labels) == 1
    assert total(scrape, "aiops_model_call_duration_seconds_count", outcome="success", **labels) == 1
    assert value(scrape, "aiops_model_tokens_total", type="output", **labels) > 0

    # A call that works at once is no failover.
    await chat.ainvoke("again")
    assert value(samples(telemetry.metrics.render().decode()), "aiops_model_failovers_total", **labels) == 1


async def test_a_run_follows_its_callers_sampling_decision_and_its_own_ratio_without_one() -> None:
    exporter = InMemorySpanExporter()
    settings = Settings(_env_file=None, trace_sample_ratio=0)  # type: ignore[call-arg]
    telemetry = Telemetry.from_settings(settings, span_exporter=exporter)
    assert telemetry.tracer is not None

    def a_run() -> ExecutionRun:
        return ExecutionRun(
            CompiledTeam(team([node("a")]), tool_registry()),
            RunRequest("e", "t", "task"),
            RuntimeSimulatorSource(telemetry),
            telemetry=telemetry,
        )

    # No caller: the ratio (0) decides, and the run records nothing.
    run = a_run()
    _ = [event async for event in run.events()]
    assert run.outcome is not None and run.outcome.status is RunStatus.success
    assert exporter.get_finished_spans() == ()

    # A sampled caller (a traceparent with the sampled flag): the run continues its trace, sampled.
    caller = propagate.extract({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    token = otel_context.attach(caller)
    try:
        run = a_run()
        _ = [event async for event in run.events()]
    finally:
        otel_context.detach(token)
    spans = exporter.get_finished_spans()
    assert named(spans, tracing.EXECUTION_SPAN) and named(spans, tracing.AGENT_SPAN)
    assert {format(s.context.trace_id, "032x") for s in spans} == {"4bf92f3577b34da6a3ce929d0e0e4736"}
    assert value(samples(telemetry.metrics.render().decode()), "aiops_executions_total", status="success") == 2


# ------------------------------------------------------------------------------------------ HTTP


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced_app(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    application = create_app(settings, telemetry=traced(exporter))
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def http(traced_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=traced_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_metrics_are_open_and_count_requests_by_route_template(http: httpx.AsyncClient) -> None:
    headers = await login(http, ADMIN_USERNAME, ADMIN_PASSWORD)
    missing = [str(uuid.uuid4()) for _ in range(2)]
    for team_id in missing:
        assert (await http.get(f"{API}/teams/{team_id}", headers=headers)).status_code == 404
    assert (await http.get(f"{API}/teams/{missing[0]}")).status_code == 401
    assert (await http.get("/no/such/path")).status_code == 404

    response = await http.get("/metrics")  # no credentials
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    scrape = samples(text)
    route = "/api/v1/teams/{team_id}"
    assert value(scrape, "aiops_http_requests_total", method="GET", route=route, status="404") == 2
    assert value(scrape, "aiops_http_requests_total", method="GET", route=route, status="401") == 1
    assert value(scrape, "aiops_http_requests_total", method="POST", route=f"{API}/auth/token", status="200") == 1
    assert value(scrape, "aiops_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert value(scrape, "aiops_http_request_duration_seconds_count", method="GET", route=route) == 3
    assert not any(team_id in text for team_id in missing), "ids never become labels"
    assert "/no/such/path" not in text
    assert value(scrape, "aiops_executions_active") == 0 and value(scrape, "aiops_sse_subscribers") == 0

    # The scrape counts itself next time; it stays out of the API description.
    scrape = samples((await http.get("/metrics")).text)
    assert value(scrape, "aiops_http_requests_total", method="GET", route="/metrics", status="200") == 1
    assert "/metrics" not in (await http.get("/openapi.json")).json()["paths"]


async def test_each_request_is_a_server_span_continuing_the_callers_trace(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    caller = f"00-{trace_id}-00f067aa0ba902b7-01"
    team_id = str(uuid.uuid4())
    headers = {**await login(http, ADMIN_USERNAME, ADMIN_PASSWORD), "traceparent": caller}
    response = await http.get(f"{API}/teams/{team_id}", headers=headers)
    await http.get("/metrics")

    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in spans] == ["POST /api/v1/auth/token", "GET /api/v1/teams/{team_id}"], "no span for /metrics"
    span = spans[1]
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert attr(span, "http.route") == "/api/v1/teams/{team_id}" and attr(span, "http.response.status_code") == 404
    assert attr(span, "url.path") == f"/api/v1/teams/{team_id}"
    assert attr(span, tracing.REQUEST_ID) == response.headers["x-request-id"]
    assert span.status.status_code is not StatusCode.ERROR  # a 404 is the client's error, not the server's


async def test_a_run_over_http_is_counted_and_traced_and_the_gauges_follow_it(
    database_url: str, tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    settings = make_settings(database_url, tmp_path / "data", sse_heartbeat_seconds=0.3)
    app = create_app(settings, telemetry=traced(exporter))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            client.headers.update(await login(client, ADMIN_USERNAME, ADMIN_PASSWORD))
            await add_simulator(client, priced=True, latency_ms=50)
            team_id = await make_team(client, nodes=2)

            async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                return samples((await client.get("/metrics")).text)

            accepted = await client.post(f"{API}/teams/{team_id}/executions", json=TASK)
            assert accepted.status_code == 202, accepted.text
            execution_id = accepted.json()["execution_id"]
            during: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
            async with aconnect_sse(client, "GET", f"{API}/executions/{execution_id}/stream") as source:
                async for message in source.aiter_sse():
                    if message.event == "execution_start":
                        during = await scrape()
            assert value(during, "aiops_sse_subscribers") == 1
            assert value(during, "aiops_executions_active") == 1

            for _ in range(200):  # the run's slot is released right after its last event is stored
                after = await scrape()
                if value(after, "aiops_executions_total", status="success") == 1:
                    break
                await asyncio.sleep(0.025)
            assert value(after, "aiops_executions_active") == 0 and value(after, "aiops_sse_subscribers") == 0
            assert value(after, "aiops_execution_duration_seconds_count", status="success") == 1
            assert value(after, "aiops_execution_duration_seconds_sum", status="success") > 0.05
            assert value(after, "aiops_node_team_duration_seconds_count", status="success") == 2
            assert value(after, "aiops_agent_duration_seconds_count", status="success") == 4
            sim = {"provider": "local-sim", "model": "sim-1"}
            calls = total(after, "aiops_model_calls_total", outcome="success", **sim)
            # per node: probe (tool turn + answer), reader (answer), the report; then the summary
            assert calls == 2 * 4 + 1
            assert total(after, "aiops_model_call_duration_seconds_sum", outcome="success", **sim) >= calls * 0.05
            input_tokens = value(after, "aiops_model_tokens_total", type="input", **sim)
            output_tokens = value(after, "aiops_model_tokens_total", type="output", **sim)
            assert input_tokens > 0 and output_tokens > 0
            cost = value(after, "aiops_model_cost_usd_total", **sim)
            assert cost == pytest.approx((input_tokens * 0.5 + output_tokens * 1.5) / 1000)
            # The same usage per team, from the finished execution.
            assert value(after, "aiops_team_tokens_total", team="diagnosis", type="input") == input_tokens
            assert value(after, "aiops_team_tokens_total", team="diagnosis", type="output") == output_tokens
            assert value(after, "aiops_team_cost_usd_total", team="diagnosis") == pytest.approx(cost)
            assert total(after, "aiops_tool_calls_total", tool="tcp_check") == 2
            assert value(after, "aiops_model_failovers_total", **sim) == 0
            execute = f"{API}/teams/{{team_id}}/executions"
            assert value(after, "aiops_http_requests_total", method="POST", route=execute, status="202") == 1
            stream = f"{API}/executions/{{execution_id}}/stream"
            assert value(after, "aiops_http_requests_total", method="GET", route=stream, status="200") == 1
    finally:
        server.should_exit = True
        await task

    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == f"POST {API}/teams/{{team_id}}/executions"]
    [execution] = named(spans, tracing.EXECUTION_SPAN)
    assert attr(execution, tracing.EXECUTION_ID) == execution_id and attr(execution, tracing.TEAM_ID) == team_id
    assert attr(execution, tracing.STATUS) == "success"
    # The run continues the trace of the request that started it (it outlives the request: a 202).
    assert execution.context.trace_id == request.context.trace_id
    assert execution.parent is not None and execution.parent.span_id == request.context.span_id
    in_run = [s for s in spans if s.context.trace_id == execution.context.trace_id]
    assert len(named(in_run, tracing.NODE_TEAM_SPAN)) == 2 and len(named(in_run, tracing.AGENT_SPAN)) == 4
    assert len(named(in_run, tracing.TOOL_SPAN)) == 2 and len(named(in_run, tracing.MODEL_SPAN)) == calls


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver on the loopback interface."""

    server: _CollectorServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.append((self.path, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CollectorServer(ThreadingHTTPServer):
    received: list[tuple[str, ExportTraceServiceRequest]]


@pytest.fixture
def collector() -> Iterator[_CollectorServer]:
    server = _CollectorServer(("127.0.0.1", 0), _Collector)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_tracing_is_off_unless_an_otlp_endpoint_is_set() -> None:
    telemetry = Telemetry.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert not telemetry.tracing and telemetry.provider is None
    assert tracing.otlp_traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.otlp_traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


async def test_with_an_otlp_endpoint_spans_are_exported_there(
    database_url: str, tmp_path: Path, collector: _CollectorServer
) -> None:
    endpoint_url = f"http://127.0.0.1:{collector.server_address[1]}"
    settings = make_settings(database_url, tmp_path / "data", otlp_endpoint=endpoint_url, otel_service_name="svc-x")
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await login(client, ADMIN_USERNAME, ADMIN_PASSWORD)
    # Stopping the app flushes the spans still buffered.
    assert [path for path, _ in collector.received] == ["/v1/traces"]
    request = collector.received[0][1]
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "svc-x"
    names = [span.name for scope in resource_spans.scope_spans for span in scope.spans]
    assert names == [f"POST {API}/auth/token"]
