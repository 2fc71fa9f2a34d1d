"""The engine driving real provider clients over real HTTP (the mock OpenAI and Anthropic servers), with the
configuration, failover and usage accounting of the model runtime."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.core.context import AppContext
from aiops_executor.engine import CompiledTeam, EventType, ExecutionRun, NodeStatus, RunRequest, RunStatus
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.tools.builtin import default_registry
from tests.engine_support import agent, node, team
from tests.helpers import created, make_provider
from tests.mock_providers import ANTHROPIC_KEY, OPENAI_KEY

SUPPORTED = {"supported": True, "score": 4}
CAPABILITIES = {"chat": SUPPORTED, "function_calling": SUPPORTED, "structured_output": SUPPORTED}


@pytest.fixture
def backend() -> str:
    # What is under test is the engine over HTTP; the configuration store is covered on both backends elsewhere.
    return "sqlite"


async def configure(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    provider_type: str,
    base_url: str,
    key: str,
    model_id: str,
) -> None:
    provider_id = await make_provider(client, headers, "cloud", provider_type)
    await created(client, headers, f"/providers/{provider_id}/endpoints", {"name": "main", "base_url": base_url})
    await created(client, headers, f"/providers/{provider_id}/credentials", {"alias": "k1", "api_key": key})
    await created(
        client,
        headers,
        f"/providers/{provider_id}/models",
        {
            "model_id": model_id,
            "name": model_id,
            "input_price": "1",
            "output_price": "2",
            "capabilities": CAPABILITIES,
        },
    )


def cloud_team(model_id: str, node_strategy: str) -> Any:
    spec = team(
        [
            node(
                "db",
                [agent("probe", tools=("tcp_check",), provider="cloud"), agent("second", tools=(), provider="cloud")],
                node_strategy,
                supervisor_provider="cloud",
                host="127.0.0.1",
                port=9,
            )
        ],
        global_provider="cloud",
    )
    # The builders name the simulator's model; point every reference at this provider's model instead.
    data = spec.model_dump()
    topology = data["topology"]
    topology["global_supervisor"]["model_id"] = model_id
    for entry in topology["nodes"]:
        entry["supervisor_config"]["model_id"] = model_id
        for member in entry["agents"]:
            member["model_id"] = model_id
    return type(spec).model_validate(data)


async def run(context: AppContext, spec: Any, **request: Any) -> tuple[ExecutionRun, list[Any], RuntimeModelSource]:
    source = RuntimeModelSource(context.model_runtime)
    execution = ExecutionRun(
        CompiledTeam(spec, default_registry()), RunRequest("e1", "t1", "Is the database up?", **request), source
    )
    events = [event async for event in execution.events()]
    return execution, events, source


@pytest.mark.parametrize("node_strategy", ["round_robin", "adaptive", "priority"])
async def test_a_team_runs_on_openai_over_http(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    context: AppContext,
    openai_mock: MockLLMServer,
    node_strategy: str,
) -> None:
    await configure(client, admin_headers, "openai_compatible", openai_mock.client_base_url, OPENAI_KEY, "gpt-4o-mini")
    execution, events, source = await run(context, cloud_team("gpt-4o-mini", node_strategy))

    assert execution.outcome is not None and execution.outcome.status is RunStatus.success, events[-1].data
    assert execution.outcome.node_results[0].status is NodeStatus.success
    calls = [e for e in events if e.type == EventType.tool_call]
    assert calls and calls[0].data["tool"] == "tcp_check"
    assert calls[0].data["output"]["reachable"] is False  # the real tool ran against the closed port
    assert any(e.type == EventType.agent_token for e in events)  # ChatOpenAI streamed over SSE
    requests = openai_mock.behaviour.requests_to("/chat/completions")
    assert len(requests) >= 4
    usage = source.usage()
    assert usage.input_tokens > 0 and usage.output_tokens > 0 and usage.cost > 0


async def test_a_team_runs_on_anthropic_with_structured_output(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext, anthropic_mock: MockLLMServer
) -> None:
    await configure(
        client, admin_headers, "anthropic", anthropic_mock.client_base_url, ANTHROPIC_KEY, "claude-haiku-4-5"
    )
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string"}, "healthy": {"type": "boolean"}},
        "required": ["summary", "healthy"],
    }
    execution, events, _ = await run(context, cloud_team("claude-haiku-4-5", "round_robin"), output_schema=schema)
    assert execution.outcome is not None and execution.outcome.status is RunStatus.success, events[-1].data
    assert isinstance(execution.outcome.structured_output["healthy"], bool)
    assert anthropic_mock.behaviour.requests_to("/v1/messages")


async def test_a_provider_that_rejects_the_key_fails_the_node_not_the_process(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext, openai_mock: MockLLMServer
) -> None:
    await configure(
        client, admin_headers, "openai_compatible", openai_mock.client_base_url, "sk-wrong-key-000000", "gpt-4o-mini"
    )
    execution, events, _ = await run(context, cloud_team("gpt-4o-mini", "round_robin"))
    assert execution.outcome is not None
    assert execution.outcome.node_results[0].status is NodeStatus.failed
    assert events[-1].type == EventType.execution_error
    # The rejected key never appears in what the run reports.
    assert "sk-wrong-key-000000" not in repr([e.payload() for e in events])
