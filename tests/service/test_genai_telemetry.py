"""OpenTelemetry's GenAI conventions on the spans of a run, and W3C trace context across its boundaries.

- ``invoke_agent <agent>`` per agent turn, ``execute_tool <tool>`` per tool call (with the model's call id),
  ``chat <model>`` per provider attempt with ``gen_ai.request.*`` / ``gen_ai.response.*`` / ``gen_ai.usage.*``
  and ``server.address``/``server.port``; a failed attempt or a broken stream has ``error.type`` and ERROR;
- the provider request carries the ``traceparent`` of its chat span (the mock server records the headers);
- an HTTP request's trace continues into the run it starts, and a job carries it into a worker.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span
from procrastinate.job_context import JobContext

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.app import create_app
from aiops_executor.core import tracing
from aiops_executor.core.request_context import origin
from aiops_executor.core.settings import Settings
from aiops_executor.engine import CompiledTeam, ExecutionRun, RunRequest, RunStatus
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.executions import queue
from aiops_executor.llm.runtime.config import CredentialConfig, DecryptedSecrets, ModelBinding
from aiops_executor.llm.runtime.failover import FailoverChatModel
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.llm.runtime.state import RuntimeState
from aiops_executor.tools.builtin import default_registry
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login
from tests.engine.test_engine_providers import cloud_team
from tests.engine_support import agent, node, team, tool_registry
from tests.executions.test_executions_api import TASK, make_team
from tests.helpers import API, add_simulator
from tests.llm.test_honest_providers import add_model, other_host, provider_with
from tests.llm.test_runtime_clients import endpoint, model
from tests.llm.test_runtime_failover import credential
from tests.mock_providers import OPENAI_KEY
from tests.service.test_telemetry import RuntimeSimulatorSource, attr, by_id, named, parent_of, traced

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def backend() -> str:
    return "sqlite"


def hex_trace(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def parent_ids(traceparent: str) -> tuple[str, str, bool]:
    """Trace id, parent span id and the sampled flag of a W3C ``traceparent``."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)


async def open_key(config: CredentialConfig) -> DecryptedSecrets:
    return DecryptedSecrets(OPENAI_KEY)


async def test_agent_tool_and_chat_spans_follow_the_genai_conventions() -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    spec = team([node("db", [agent("prober", tools=("probe",))])])
    run = ExecutionRun(
        CompiledTeam(spec, tool_registry()),
        RunRequest("exec-9", "team-9", "Is the database up?"),
        RuntimeSimulatorSource(telemetry),
        telemetry=telemetry,
    )
    _ = [event async for event in run.events()]
    assert run.outcome is not None and run.outcome.status is RunStatus.success
    spans = exporter.get_finished_spans()
    index = by_id(spans)

    [execution] = named(spans, tracing.EXECUTION_SPAN)
    assert attr(execution, "gen_ai.conversation.id") == "exec-9"
    [invoke] = named(spans, tracing.AGENT_SPAN)
    agent_spec = spec.topology.nodes[0].agents[0]
    assert invoke.name == f"invoke_agent {agent_spec.agent_name}"
    assert attr(invoke, "gen_ai.operation.name") == "invoke_agent"
    assert attr(invoke, "gen_ai.agent.id") == "prober" and attr(invoke, "gen_ai.agent.name") == agent_spec.agent_name
    assert attr(invoke, "gen_ai.request.model") == agent_spec.model_id

    [tool] = named(spans, tracing.TOOL_SPAN)
    assert tool.name == "execute_tool probe" and parent_of(tool, index) is invoke
    assert attr(tool, "gen_ai.operation.name") == "execute_tool" and attr(tool, "gen_ai.tool.name") == "probe"
    assert attr(tool, "gen_ai.tool.type") == "function"
    call_id = attr(tool, "gen_ai.tool.call.id")
    assert isinstance(call_id, str) and call_id, "the id of the model's tool call"

    chats = named(spans, tracing.MODEL_SPAN)
    assert chats and all(c.kind is SpanKind.CLIENT for c in chats)
    for chat in chats:
        assert chat.name == f"chat {attr(chat, 'gen_ai.request.model')}"
        assert attr(chat, "gen_ai.operation.name") == "chat" and attr(chat, "gen_ai.provider.name") == "simulator"
        assert attr(chat, "gen_ai.usage.input_tokens") > 0 and attr(chat, "gen_ai.usage.output_tokens") > 0
        assert chat.status.status_code is not StatusCode.ERROR and attr(chat, "error.type") is None


async def test_a_chat_span_describes_the_request_and_response_and_its_traceparent_reaches_the_provider(
    openai_mock: MockLLMServer,
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    live = endpoint(openai_mock.client_base_url, name="live")
    binding = ModelBinding(model("openai", "gpt-4o-mini", provider_name="cloud"), (live,), (credential("k"),))
    chat = FailoverChatModel(
        binding=binding,
        params={"temperature": 0.2, "max_tokens": 64, "top_p": 0.9},
        state=RuntimeState(),
        open_secrets=open_key,
        telemetry=telemetry,
    )
    assert telemetry.tracer is not None
    with telemetry.tracer.start_as_current_span("caller"):
        await chat.ainvoke("hi")

    [span] = named(exporter.get_finished_spans(), tracing.MODEL_SPAN)
    assert attr(span, "server.address") == "127.0.0.1" and attr(span, "server.port") == openai_mock.port
    assert attr(span, "gen_ai.request.model") == "gpt-4o-mini"
    assert attr(span, "gen_ai.request.temperature") == 0.2 and attr(span, "gen_ai.request.max_tokens") == 64
    assert attr(span, "gen_ai.request.top_p") == 0.9
    assert attr(span, "gen_ai.response.model") == "gpt-4o-mini"
    assert str(attr(span, "gen_ai.response.id")).startswith("chatcmpl")
    assert list(attr(span, "gen_ai.response.finish_reasons")) == ["stop"]
    assert attr(span, "gen_ai.usage.output_tokens") > 0

    [request] = openai_mock.behaviour.requests_to("/chat/completions")
    chat_span = (hex_trace(span), format(span.context.span_id, "016x"), True)
    assert parent_ids(request.headers["traceparent"]) == chat_span, "the provider sees the chat span as parent"


async def test_failed_attempts_and_broken_streams_are_errors_on_their_spans(openai_mock: MockLLMServer) -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    binding = ModelBinding(
        model("openai", "gpt-4o-mini", provider_name="cloud"),
        (endpoint(openai_mock.client_base_url, name="live"),),
        (credential("k"),),
    )
    chat = FailoverChatModel(binding=binding, state=RuntimeState(), open_secrets=open_key, telemetry=telemetry)

    # A stream that breaks after some output: the caller got part of an answer, the attempt failed.
    openai_mock.behaviour.fail_next(status=500, during_stream=True)
    with pytest.raises(Exception, match=r"(?i)error|fail"):
        _ = [chunk async for chunk in chat.astream("hi")]
    [broken] = named(exporter.get_finished_spans(), tracing.MODEL_SPAN)
    assert broken.status.status_code is StatusCode.ERROR
    assert attr(broken, "error.type") and attr(broken, "error.type") != "success"
    assert attr(broken, tracing.STATUS) != "success"
    exporter.clear()

    # A stream that works: a success with what the provider said about its answer.
    _ = [chunk async for chunk in chat.astream("hi")]
    [streamed] = named(exporter.get_finished_spans(), tracing.MODEL_SPAN)
    assert streamed.status.status_code is not StatusCode.ERROR and attr(streamed, "error.type") is None
    assert list(attr(streamed, "gen_ai.response.finish_reasons")) == ["stop"]
    exporter.clear()

    # A refused call (HTTP 500), then the same call working.
    openai_mock.behaviour.fail_next(status=500)
    binding_twice = ModelBinding(
        binding.model,
        (
            endpoint(openai_mock.client_base_url, name="first", priority=1),
            endpoint(openai_mock.client_base_url, name="second", priority=2),
        ),
        (credential("k"),),
    )
    chat = FailoverChatModel(binding=binding_twice, state=RuntimeState(), open_secrets=open_key, telemetry=telemetry)
    await chat.ainvoke("hi")
    failed, worked = named(exporter.get_finished_spans(), tracing.MODEL_SPAN)
    assert failed.status.status_code is StatusCode.ERROR and attr(failed, "error.type") == "PROVIDER_ERROR"
    assert worked.status.status_code is not StatusCode.ERROR and attr(worked, "error.type") is None


async def test_a_request_trace_continues_into_the_run_it_starts(settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(settings, telemetry=traced(exporter))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            client.headers.update(await login(client, ADMIN_USERNAME, ADMIN_PASSWORD))
            await add_simulator(client, priced=True)
            team_id = await make_team(client, nodes=1)
            run = await client.post(
                f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False}, headers={"traceparent": CALLER}
            )
            assert run.status_code == 200, run.text
    spans = exporter.get_finished_spans()
    [request] = [s for s in spans if s.name == f"POST {API}/teams/{{team_id}}/execute"]
    [execution] = named(spans, tracing.EXECUTION_SPAN)
    assert hex_trace(request) == CALLER_TRACE
    assert hex_trace(execution) == CALLER_TRACE, "the run continues the caller's trace"
    assert execution.parent is not None and execution.parent.span_id == request.context.span_id
    in_run = [s for s in spans if hex_trace(s) == CALLER_TRACE]
    assert named(in_run, tracing.AGENT_SPAN) and named(in_run, tracing.MODEL_SPAN)


async def test_a_job_carries_the_trace_context_into_the_worker() -> None:
    exporter = InMemorySpanExporter()
    telemetry = traced(exporter)
    assert telemetry.tracer is not None
    # The API side: the job's origin is taken inside the request's span.
    with telemetry.tracer.start_as_current_span("POST /api/v1/teams/{team_id}/executions") as request:
        carried = origin()
    assert carried["traceparent"].split("-")[1] == format(request.get_span_context().trace_id, "032x")

    # The worker side: another process knows only what the job carries.
    seen: dict[str, Any] = {}

    class Runner:
        async def run_job(self, execution_id: uuid.UUID, abort_reason: Any) -> None:
            seen["parent"] = get_current_span().get_span_context()
            span = telemetry.start_execution(str(execution_id), "t")
            telemetry.finish_execution(span, "success", 0.1)

    # What run_execution reads of procrastinate's job context.
    job = cast(JobContext, SimpleNamespace(additional_context={"runner": Runner()}, abort_reason=lambda: None))
    await queue.run_execution(job, str(uuid.uuid4()), {**carried, "request_id": "req-1"})
    [execution] = named(exporter.get_finished_spans(), tracing.EXECUTION_SPAN)
    assert seen["parent"].span_id == request.get_span_context().span_id
    assert execution.context.trace_id == request.get_span_context().trace_id
    assert execution.parent is not None and execution.parent.span_id == request.get_span_context().span_id


async def test_a_stream_cut_mid_way_in_a_run_is_an_error_span_and_the_retry_a_success(
    settings: Settings, openai_mock: MockLLMServer
) -> None:
    exporter = InMemorySpanExporter()
    app = create_app(settings, telemetry=traced(exporter))
    async with LifespanManager(app):
        context = app.state.context
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = await login(client, ADMIN_USERNAME, ADMIN_PASSWORD)
            endpoints = [("first", openai_mock.client_base_url), ("second", other_host(openai_mock))]
            pid, _, _ = await provider_with(client, headers, endpoints, [("k", OPENAI_KEY)])
            await add_model(client, headers, pid, "gpt-4o-mini")
        openai_mock.behaviour.queue_text("The database answers slowly because the disk is full.")
        openai_mock.behaviour.fail_next(1, 500, during_stream=True, message="upstream model crashed")
        data = cloud_team("gpt-4o-mini", "round_robin").model_dump()
        data["topology"]["nodes"][0]["agents"] = data["topology"]["nodes"][0]["agents"][1:]  # one agent, no tools
        spec = TeamSpec.model_validate(data)
        run = ExecutionRun(
            CompiledTeam(spec, default_registry()),
            RunRequest("e-cut", "t-cut", "Is the database up?"),
            RuntimeModelSource(context.model_runtime),
            telemetry=context.telemetry,
        )
        events = [event async for event in run.events()]
        context.model_runtime.state.reset()
    assert run.outcome is not None and run.outcome.status is RunStatus.success, events[-1].data
    spans = exporter.get_finished_spans()
    index = by_id(spans)
    [invoke] = named(spans, tracing.AGENT_SPAN)
    under_agent = [s for s in named(spans, tracing.MODEL_SPAN) if parent_of(s, index) is invoke]
    cut, retried = under_agent[0], under_agent[1]
    assert attr(cut, tracing.ENDPOINT) == "first" and cut.status.status_code is StatusCode.ERROR
    assert attr(cut, "error.type") == "PROVIDER_ERROR"
    assert attr(retried, tracing.ENDPOINT) == "second" and retried.status.status_code is not StatusCode.ERROR
    assert attr(retried, "server.address") == "localhost"
    assert list(attr(retried, "gen_ai.response.finish_reasons")) == ["stop"]
