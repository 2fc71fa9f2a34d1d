"""Real model servers, honestly: every provider call fails over, cool-downs honour Retry-After and show in
health, a stream cut mid-way starts again on the next endpoint, unknown usage stays unknown, structured output
works on servers that reject ``tool_choice="required"`` or JSON Schema response formats, and an undecryptable
credential is reported at once. Over real HTTP against the project's mock servers."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.core.errors import AppError
from aiops_executor.engine import EventType, NodeStatus, RunStatus
from aiops_executor.engine.structured import JSON_SCHEMA, PROMPTED_JSON, TOOL_CALLING, ask_structured, parse_json_object
from aiops_executor.services import ServiceContext
from tests.engine.test_engine_providers import CAPABILITIES, cloud_team, run
from tests.helpers import API, created, damage_credential, make_provider
from tests.mock_providers import OPENAI_KEY, OPENAI_KEY_2

DEAD_URL = "http://127.0.0.1:9/v1"
WRONG_KEY = "sk-wrong-key-0000000000"
SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}, "healthy": {"type": "boolean"}},
    "required": ["summary", "healthy"],
}


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the SQLite write lock is what made an undecryptable credential hang; both run elsewhere


def other_host(mock: MockLLMServer) -> str:
    """The same mock server under another loopback name: a second endpoint whose requests can be told apart."""
    return f"http://localhost:{mock.port}/v1"


def hosts(mock: MockLLMServer, path: str) -> list[str]:
    return [r.headers.get("host", "").split(":")[0] for r in mock.behaviour.requests_to(path)]


async def provider_with(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    endpoints: list[tuple[str, str]],
    keys: list[tuple[str, str]],
    provider_type: str = "openai_compatible",
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """A provider with endpoints (name, base URL) in priority order and credentials (alias, key) in order."""
    pid = await make_provider(client, headers, "cloud", provider_type)
    made = [
        await created(client, headers, f"/providers/{pid}/endpoints", {"name": name, "base_url": url, "priority": i})
        for i, (name, url) in enumerate(endpoints)
    ]
    creds = [
        await created(client, headers, f"/providers/{pid}/credentials", {"alias": alias, "api_key": key})
        for alias, key in keys
    ]
    return pid, made, creds


async def add_model(client: httpx.AsyncClient, headers: dict[str, str], pid: str, model_id: str) -> dict[str, Any]:
    body = {"model_id": model_id, "name": model_id, "input_price": "1", "output_price": "2"}
    return await created(client, headers, f"/providers/{pid}/models", {**body, "capabilities": CAPABILITIES})


# --------------------------------------------------------------------------------------------- failover


async def test_validate_and_sync_fail_over_past_a_dead_priority_0_endpoint(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    pid, _, [cred] = await provider_with(
        client, admin_headers, [("dead", DEAD_URL), ("live", openai_mock.client_base_url)], [("k", OPENAI_KEY)]
    )
    validated = (await client.post(f"{API}/credentials/{cred['id']}/validate", headers=admin_headers)).json()
    assert validated["valid"] is True, validated
    stored = (await client.get(f"{API}/credentials/{cred['id']}", headers=admin_headers)).json()
    assert stored["validation_status"] == "valid"

    synced = await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers)
    assert synced.status_code == 200, synced.text
    assert set(synced.json()["created"]) == set(openai_mock.behaviour.models)


async def test_with_every_endpoint_down_validation_names_each_and_leaves_the_key_alone(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    _, _, [cred] = await provider_with(
        client, admin_headers, [("east", DEAD_URL), ("west", "http://127.0.0.1:10/v1")], [("k", OPENAI_KEY)]
    )
    body = (await client.post(f"{API}/credentials/{cred['id']}/validate", headers=admin_headers)).json()
    assert body["valid"] is False and body["error_code"] == "PROVIDER_UNREACHABLE"
    assert "endpoint 'east'" in body["error_message"] and "endpoint 'west'" in body["error_message"]
    assert "Error" not in body["error_message"].split(":")[0]  # no exception class leads the message
    stored = (await client.get(f"{API}/credentials/{cred['id']}", headers=admin_headers)).json()
    assert stored["validation_status"] == "unknown", "an unreachable provider says nothing about the key"


async def test_a_health_check_tries_the_next_key_when_one_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    _, [endpoint], _ = await provider_with(
        client, admin_headers, [("main", openai_mock.client_base_url)], [("old", WRONG_KEY), ("new", OPENAI_KEY)]
    )
    body = (await client.post(f"{API}/endpoints/{endpoint['id']}/health-check", headers=admin_headers)).json()
    assert body["status"] == "healthy", body
    [refused] = body["details"]["attempts"]
    assert refused["credential_alias"] == "old" and refused["error_code"] == "CREDENTIAL_INVALID"


async def test_a_429_with_retry_after_cools_the_endpoint_down_and_health_says_degraded(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, [first, _], _ = await provider_with(
        client,
        admin_headers,
        [("first", openai_mock.client_base_url), ("second", other_host(openai_mock))],
        [("k", OPENAI_KEY)],
    )
    model = await add_model(client, admin_headers, pid, "gpt-4o-mini")
    openai_mock.behaviour.fail_next(1, 429, retry_after=40)
    assert (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()["ok"] is True
    assert hosts(openai_mock, "/chat/completions") == ["127.0.0.1", "localhost"]  # 429, then the next endpoint

    openai_mock.behaviour.clear_requests()
    assert (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()["ok"] is True
    assert hosts(openai_mock, "/chat/completions") == ["localhost"], "the throttled endpoint is not tried first"

    shown = (await client.get(f"{API}/endpoints/{first['id']}", headers=admin_headers)).json()
    assert shown["health_status"] == "degraded" and 35 < shown["cooldown_seconds"] <= 40, shown
    listed = (await client.get(f"{API}/providers/{pid}/endpoints", headers=admin_headers)).json()["items"]
    assert [(e["name"], e["health_status"]) for e in listed] == [("first", "degraded"), ("second", "unknown")]
    health = (await client.post(f"{API}/endpoints/{first['id']}/health-check", headers=admin_headers)).json()
    assert health["status"] == "degraded" and 35 < health["details"]["cooldown_seconds"] <= 40, health
    context.model_runtime.state.reset()


async def test_an_undecryptable_credential_is_reported_at_once_and_marked(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    _, _, [damaged, donor] = await provider_with(
        client, admin_headers, [("main", openai_mock.client_base_url)], [("damaged", OPENAI_KEY), ("d", OPENAI_KEY)]
    )
    await damage_credential(context, damaged["id"], donor["id"])
    started = time.perf_counter()
    response = await client.post(f"{API}/credentials/{damaged['id']}/validate", headers=admin_headers)
    assert time.perf_counter() - started < 5, "no wait for a lock held by the request itself"
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"] is False and body["error_code"] == "CREDENTIAL_UNDECRYPTABLE"
    assert "re-enter" in body["error_message"]
    stored = (await client.get(f"{API}/credentials/{damaged['id']}", headers=admin_headers)).json()
    assert stored["validation_status"] == "undecryptable"
    assert openai_mock.behaviour.requests_to("/models") == [], "nothing was sent for a key that cannot be opened"


# --------------------------------------------------------------------------------------------- streams and usage


async def test_a_stream_cut_mid_way_starts_again_on_the_next_endpoint(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, _ = await provider_with(
        client,
        admin_headers,
        [("first", openai_mock.client_base_url), ("second", other_host(openai_mock))],
        [("k", OPENAI_KEY)],
    )
    await add_model(client, admin_headers, pid, "gpt-4o-mini")
    # The first agent's answer streams a few words from "first", then the provider fails mid-stream.
    openai_mock.behaviour.queue_text("The database answers slowly because the disk is full.")
    openai_mock.behaviour.fail_next(1, 500, during_stream=True, message="upstream model crashed")
    spec = cloud_team("gpt-4o-mini", "round_robin")
    data = spec.model_dump()
    data["topology"]["nodes"][0]["agents"] = data["topology"]["nodes"][0]["agents"][1:]  # one agent, no tools
    execution, events, _ = await run(context, type(spec).model_validate(data))

    assert execution.outcome is not None and execution.outcome.status is RunStatus.success, events[-1].data
    [discarded] = [e for e in events if e.type == EventType.agent_tokens_discarded]
    assert discarded.agent_id == "second" and discarded.node_id == "db"
    assert discarded.data["discarded_tokens"] >= 1 and discarded.data["endpoint"] == "first"
    assert "upstream model crashed" in discarded.data["reason"]
    at = events.index(discarded)
    assert [e for e in events[:at] if e.type == EventType.agent_token], "the first endpoint's deltas were shown"
    [message] = [e for e in events if e.type == EventType.agent_message]
    streamed_after = "".join(
        e.data["delta"] for e in events[at : events.index(message)] if e.type == EventType.agent_token
    )
    # Deltas still held when the message came are dropped (the message has them): what was shown is its start.
    assert message.data["message"].startswith(streamed_after), "the answer is the second endpoint's, not a splice"
    context.model_runtime.state.reset()


async def test_a_stream_without_usage_is_unknown_not_free(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, _ = await provider_with(client, admin_headers, [("main", openai_mock.client_base_url)], [("k", OPENAI_KEY)])
    await add_model(client, admin_headers, pid, "gpt-4o-mini")
    openai_mock.behaviour.stream_usage = False
    execution, events, source = await run(context, cloud_team("gpt-4o-mini", "round_robin"))
    assert execution.outcome is not None and execution.outcome.status is RunStatus.success, events[-1].data
    streamed = [r for r in openai_mock.behaviour.requests_to("/chat/completions") if r.body.get("stream")]
    assert streamed and all(r.body["stream_options"] == {"include_usage": True} for r in streamed)
    node = execution.outcome.node_results[0]
    assert node.usage.input_tokens is None and node.usage.cost is None
    assert execution.outcome.usage.output_tokens is None and source.usage().cost is None


# --------------------------------------------------------------------------------------------- structured output


async def test_structured_output_on_a_server_that_rejects_tool_choice_required(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, _ = await provider_with(client, admin_headers, [("main", openai_mock.client_base_url)], [("k", OPENAI_KEY)])
    await add_model(client, admin_headers, pid, "gpt-4o-mini")
    openai_mock.behaviour.reject_tool_choice_required = True  # llama.cpp's server
    execution, events, _ = await run(context, cloud_team("gpt-4o-mini", "adaptive"), output_schema=SCHEMA)

    assert execution.outcome is not None and execution.outcome.status is RunStatus.success, events[-1].data
    assert execution.outcome.node_results[0].status is NodeStatus.success
    assert isinstance(execution.outcome.structured_output["healthy"], bool)
    bodies = [r.body for r in openai_mock.behaviour.requests_to("/chat/completions")]
    assert not [b for b in bodies if b.get("tool_choice") == "required"]
    schemas = [b["response_format"] for b in bodies if "response_format" in b]
    assert schemas and all(f["type"] == "json_schema" for f in schemas)  # routing and the result alike
    context.model_runtime.state.reset()


async def test_structured_output_falls_back_to_a_named_tool_and_remembers_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, _ = await provider_with(client, admin_headers, [("main", openai_mock.client_base_url)], [("k", OPENAI_KEY)])
    await add_model(client, admin_headers, pid, "gpt-4o-mini")
    openai_mock.behaviour.reject_tool_choice_required = True
    openai_mock.behaviour.reject_json_schema = True  # neither grammar nor "required": a named tool choice works
    execution, events, _ = await run(context, cloud_team("gpt-4o-mini", "adaptive"), output_schema=SCHEMA)
    assert execution.outcome is not None and execution.outcome.status is RunStatus.success, events[-1].data
    assert isinstance(execution.outcome.structured_output["summary"], str)
    rejected = [r for r in openai_mock.behaviour.requests_to("/chat/completions") if r.status == 400]
    assert len(rejected) == 1, "after the first rejection the model's working strategy is remembered"
    forced = [r.body.get("tool_choice") for r in openai_mock.behaviour.requests_to("/chat/completions")]
    assert {"type": "function", "function": {"name": "StructuredResult"}} in forced
    context.model_runtime.state.reset()


class StrategyProbe(BaseChatModel):
    """Rejects JSON Schema requests, ignores the tool it is asked to call, and wraps JSON in prose."""

    structured_output_strategies: tuple[str, ...] = (JSON_SCHEMA, TOOL_CALLING, PROMPTED_JSON)
    remembered: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "strategy-probe"

    def remember_structured_output_strategy(self, strategy: str) -> None:
        self.remembered.append(strategy)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self.bind(tools=tools, **kwargs)

    def with_structured_output(self, schema: Any, *, method: str = "function_calling", **kwargs: Any) -> Any:
        if method == "json_schema":
            raise AppError("400 response_format is not supported", error_code="PROVIDER_REQUEST_REJECTED")
        return super().with_structured_output(schema, **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = 'Sure! Here it is:\n```json\n{"summary": "disk full", "healthy": false}\n```'
        if kw.get("tools"):
            text = "I would rather explain in words."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


async def test_structured_answers_fall_back_to_prompted_json() -> None:
    model = StrategyProbe()
    answer = await ask_structured(model, SCHEMA, [HumanMessage("Is the database healthy?")])
    assert answer.strategy == PROMPTED_JSON and answer.value == {"summary": "disk full", "healthy": False}
    assert model.remembered == [PROMPTED_JSON]


def test_json_objects_are_found_in_a_models_text() -> None:
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('Answer:\n```json\n{"a": [1, 2]}\n```\nDone.') == {"a": [1, 2]}
    assert parse_json_object('The result is {"a": {"b": true}} as asked.') == {"a": {"b": True}}
    assert parse_json_object("no object here") is None
    assert parse_json_object("[1, 2]") is None


async def test_a_second_key_is_used_when_the_first_is_throttled_on_the_only_endpoint(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, _ = await provider_with(
        client, admin_headers, [("main", openai_mock.client_base_url)], [("a", OPENAI_KEY), ("b", OPENAI_KEY_2)]
    )
    model = await add_model(client, admin_headers, pid, "gpt-4o-mini")
    openai_mock.behaviour.fail_next(1, 429, retry_after=30, only_key=OPENAI_KEY)
    assert (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()["ok"] is True
    openai_mock.behaviour.clear_requests()
    assert (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()["ok"] is True
    assert len(openai_mock.behaviour.requests_to("/chat/completions")) == 1, "the throttled key is not tried first"
    context.model_runtime.state.reset()


# --------------------------------------------------------------------------------------------- honest results


async def test_a_supervisor_that_answers_in_words_fails_its_node_and_the_run_says_why(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, _ = await provider_with(client, admin_headers, [("main", openai_mock.client_base_url)], [("k", OPENAI_KEY)])
    await add_model(client, admin_headers, pid, "gpt-4o-mini")
    words = "I would look at the slow query log first."
    openai_mock.behaviour.queue_text(words, words, words)  # one per structured-output strategy
    execution, events, _ = await run(context, cloud_team("gpt-4o-mini", "adaptive"))

    assert execution.outcome is not None and execution.outcome.status is RunStatus.failed
    [db] = execution.outcome.node_results
    reason = f'it answered in plain words, not with the structured answer asked for: "{words}"'
    assert (
        db.status is NodeStatus.failed
        and db.error == f"supervisor of db: could not route the task to an agent: {reason}"
    )
    assert [e for e in events if e.type == EventType.agent_message] == [], "no agent ran"
    [decision] = [e.data for e in events if e.type == EventType.node_supervisor_decision]
    assert decision["next_agents"] == [] and decision["error"] == db.error
    [complete] = [e for e in events if e.type == EventType.node_complete]
    assert complete.data["status"] == "failed"
    terminal = events[-1]
    assert terminal.type == EventType.execution_error and terminal.data["error_code"] == "EXECUTION_FAILED"
    assert terminal.data["error_message"] == f"every node team failed: db: {db.error}"
    bodies = [r.body for r in openai_mock.behaviour.requests_to("/chat/completions")]
    assert [("response_format" in b, b.get("tool_choice")) for b in bodies] == [
        (True, None),
        (False, {"type": "function", "function": {"name": "NextAgent"}}),
        (False, None),
    ], "json_schema, then a named tool, then prompted JSON; no summary of nothing"
