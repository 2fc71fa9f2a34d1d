"""The mock LLM provider servers, driven over real HTTP by the real SDK and LangChain client classes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_openai import AzureChatOpenAI, ChatOpenAI
from pydantic import BaseModel, Field

from aiops_devtools.mock_providers import (
    DEFAULT_API_KEY,
    MockBehaviour,
    MockLLMServer,
    MockReply,
    ToolCall,
    sample_from_schema,
)
from aiops_devtools.mock_providers.behaviour import REDACTED, estimate_tokens

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
SECRET_KEY = "sk-mock-super-secret-0123456789"


def get_cpu_load(host: str, minutes: int) -> str:
    """Return the CPU load of a host over the last minutes."""
    return f"{host}: 0.5 over {minutes}m"


class Diagnosis(BaseModel):
    summary: str
    severity: int = Field(ge=1, le=5)
    affected_hosts: list[str]


def _aggregate(chunks: Iterable[BaseMessage]) -> AIMessageChunk:
    """Sum streamed chunks the way LangChain does."""
    typed = [chunk for chunk in chunks if isinstance(chunk, AIMessageChunk)]
    assert typed
    total = typed[0]
    for chunk in typed[1:]:
        total = total + chunk
    return total


@pytest.fixture(scope="module")
def _openai_server() -> Iterator[MockLLMServer]:
    with MockLLMServer("openai", keys=[SECRET_KEY]) as server:
        yield server


@pytest.fixture(scope="module")
def _anthropic_server() -> Iterator[MockLLMServer]:
    with MockLLMServer("anthropic", keys=[SECRET_KEY]) as server:
        yield server


@pytest.fixture
def openai_server(_openai_server: MockLLMServer) -> MockLLMServer:
    _openai_server.behaviour.reset()
    return _openai_server


@pytest.fixture
def anthropic_server(_anthropic_server: MockLLMServer) -> MockLLMServer:
    _anthropic_server.behaviour.reset()
    return _anthropic_server


def chat_openai(server: MockLLMServer, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"model": OPENAI_MODEL, "api_key": SECRET_KEY, "max_retries": 0, "timeout": 10}
    options.update(kwargs)
    return ChatOpenAI(base_url=server.client_base_url, **options)


def chat_anthropic(server: MockLLMServer, **kwargs: Any) -> ChatAnthropic:
    options: dict[str, Any] = {"model": ANTHROPIC_MODEL, "api_key": SECRET_KEY, "max_retries": 0, "timeout": 10}
    options.update(kwargs)
    return ChatAnthropic(base_url=server.client_base_url, **options)


# ---------------------------------------------------------------------------------------------------------------
# OpenAI
# ---------------------------------------------------------------------------------------------------------------


def test_openai_invoke_scripted_text_with_usage(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.queue_text("The disk on web-1 is full.")
    result = chat_openai(openai_server).invoke("Why is web-1 down?")
    assert result.content == "The disk on web-1 is full."
    assert result.response_metadata["finish_reason"] == "stop"
    assert result.response_metadata["model_name"] == OPENAI_MODEL
    assert result.usage_metadata is not None
    assert result.usage_metadata["input_tokens"] > 0
    assert result.usage_metadata["output_tokens"] == estimate_tokens("The disk on web-1 is full.")
    entry = openai_server.behaviour.last_request("/chat/completions")
    assert entry is not None and entry.status == 200
    assert entry.body["messages"] == [{"role": "user", "content": "Why is web-1 down?"}]


def test_openai_default_reply_echoes_last_user_message(openai_server: MockLLMServer) -> None:
    result = chat_openai(openai_server).invoke("What is the CPU load on db-2?")
    assert result.content == "Mock reply to: What is the CPU load on db-2?"


def test_openai_stream_chunks_and_usage(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.queue_text("one two three four")
    chunks = list(chat_openai(openai_server).stream("count", stream_usage=True))
    texts = [chunk.content for chunk in chunks if chunk.content]
    assert texts == ["one", " two", " three", " four"]
    total = _aggregate(chunks)
    assert isinstance(total, AIMessageChunk)
    assert total.content == "one two three four"
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == estimate_tokens("one two three four")
    assert total.response_metadata["finish_reason"] == "stop"
    entry = openai_server.behaviour.last_request("/chat/completions")
    assert entry is not None
    assert entry.body["stream"] is True
    assert entry.body["stream_options"] == {"include_usage": True}


def test_openai_raw_sdk_stream_format(openai_server: MockLLMServer) -> None:
    client = openai.OpenAI(base_url=openai_server.client_base_url, api_key=SECRET_KEY, max_retries=0)
    openai_server.behaviour.queue_text("hello world")
    stream = client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello world"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == estimate_tokens("hello world")
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


async def test_openai_async_invoke_and_stream(openai_server: MockLLMServer) -> None:
    llm = chat_openai(openai_server)
    openai_server.behaviour.queue_text("async answer", "streamed answer")
    result = await llm.ainvoke("hi")
    assert result.content == "async answer"
    chunks = [chunk async for chunk in llm.astream("hi", stream_usage=True)]
    total = _aggregate(chunks)
    assert total.content == "streamed answer"
    assert isinstance(total, AIMessageChunk) and total.usage_metadata is not None


def test_openai_bind_tools_default_call_then_answer(openai_server: MockLLMServer) -> None:
    llm = chat_openai(openai_server).bind_tools([get_cpu_load])
    first = llm.invoke([HumanMessage("How loaded is web-1?")])
    assert first.response_metadata["finish_reason"] == "tool_calls"
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call["name"] == "get_cpu_load"
    assert call["args"] == {"host": "x", "minutes": 1}
    assert call["id"] and call["id"].startswith("call_")

    tool_result = ToolMessage(content="web-1: 0.93", tool_call_id=call["id"])
    second = llm.invoke([HumanMessage("How loaded is web-1?"), first, tool_result])
    assert not second.tool_calls
    assert second.content == "Tool result received: web-1: 0.93"
    sent = openai_server.behaviour.last_request("/chat/completions")
    assert sent is not None
    assert sent.body["messages"][1]["tool_calls"][0]["id"] == call["id"]
    assert sent.body["tools"][0]["function"]["name"] == "get_cpu_load"


def test_openai_scripted_tool_call_streamed(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.queue_tool_call("get_cpu_load", {"host": "db-2", "minutes": 15}, id="call_fixed")
    llm = chat_openai(openai_server).bind_tools([get_cpu_load])
    chunks = list(llm.stream("load of db-2?"))
    assert sum(1 for c in chunks if isinstance(c, AIMessageChunk) and c.tool_call_chunks) > 2
    total = _aggregate(chunks)
    assert isinstance(total, AIMessageChunk)
    assert total.tool_calls == [
        {"name": "get_cpu_load", "args": {"host": "db-2", "minutes": 15}, "id": "call_fixed", "type": "tool_call"}
    ]
    assert total.response_metadata["finish_reason"] == "tool_calls"


def test_openai_tool_choice_none_answers_text(openai_server: MockLLMServer) -> None:
    llm = chat_openai(openai_server).bind_tools([get_cpu_load], tool_choice="none")
    result = llm.invoke("just talk")
    assert not result.tool_calls
    assert result.content == "Mock reply to: just talk"


def test_openai_structured_output_json_schema(openai_server: MockLLMServer) -> None:
    structured = chat_openai(openai_server).with_structured_output(Diagnosis, method="json_schema")
    default = structured.invoke("diagnose")
    assert default == Diagnosis(summary="x", severity=1, affected_hosts=[])

    openai_server.behaviour.queue_json({"summary": "disk full", "severity": 4, "affected_hosts": ["web-1"]})
    scripted = structured.invoke("diagnose")
    assert scripted == Diagnosis(summary="disk full", severity=4, affected_hosts=["web-1"])
    sent = openai_server.behaviour.last_request("/chat/completions")
    assert sent is not None
    assert sent.body["response_format"]["type"] == "json_schema"


def test_openai_json_mode(openai_server: MockLLMServer) -> None:
    result = chat_openai(openai_server).invoke("status please", response_format={"type": "json_object"})
    assert isinstance(result.content, str)
    assert json.loads(result.content) == {"answer": "status please"}


def test_azure_chat_openai_invoke(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.queue_text("hello from azure")
    llm = AzureChatOpenAI(
        azure_endpoint=openai_server.azure_endpoint,
        azure_deployment="ops-gpt4o",
        api_version="2024-10-21",
        api_key=SECRET_KEY,
        max_retries=0,
        timeout=10,
    )
    result = llm.invoke("hi")
    assert result.content == "hello from azure"
    assert result.usage_metadata is not None and result.usage_metadata["total_tokens"] > 0
    entry = openai_server.behaviour.last_request()
    assert entry is not None
    assert entry.path == "/openai/deployments/ops-gpt4o/chat/completions"
    assert entry.query == {"api-version": "2024-10-21"}
    assert entry.headers["api-key"] == REDACTED


def test_azure_requires_api_version_and_key(openai_server: MockLLMServer) -> None:
    url = f"{openai_server.base_url}/openai/deployments/d/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(url, json=body, headers={"api-key": SECRET_KEY}).status_code == 404
    missing = httpx.post(url, params={"api-version": "2024-10-21"}, json=body)
    assert missing.status_code == 401
    assert set(missing.json()["error"]) >= {"message", "type", "code"}


def test_openai_wrong_key_is_authentication_error(openai_server: MockLLMServer) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        chat_openai(openai_server, api_key="sk-wrong-key-000000").invoke("hi")
    assert info.value.status_code == 401
    raw = httpx.post(
        f"{openai_server.client_base_url}/chat/completions",
        json={"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "Bearer nope"},
    )
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert isinstance(error["message"], str)


def test_openai_keys_change_at_run_time(openai_server: MockLLMServer) -> None:
    llm = chat_openai(openai_server, api_key="sk-rotated-key-1234")
    with pytest.raises(openai.AuthenticationError):
        llm.invoke("hi")
    openai_server.behaviour.add_key("sk-rotated-key-1234")
    assert llm.invoke("hi").content == "Mock reply to: hi"
    openai_server.behaviour.remove_key("sk-rotated-key-1234")
    with pytest.raises(openai.AuthenticationError):
        llm.invoke("hi")


def test_openai_429_then_success_with_retries(openai_server: MockLLMServer) -> None:
    behaviour = openai_server.behaviour
    behaviour.fail_next(2, 429, retry_after=0.01)
    behaviour.queue_text("finally")
    result = chat_openai(openai_server, max_retries=2).invoke("hi")
    assert result.content == "finally"
    statuses = [entry.status for entry in behaviour.requests_to("/chat/completions")]
    assert statuses == [429, 429, 200]


def test_openai_429_without_retries_raises(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.fail_next(1, 429, retry_after=0.01)
    with pytest.raises(openai.RateLimitError) as info:
        chat_openai(openai_server).invoke("hi")
    assert info.value.response.headers["retry-after-ms"] == "10"
    assert info.value.response.headers["retry-after"] == "1"
    openai_server.behaviour.fail_next(1, 500)
    with pytest.raises(openai.InternalServerError):
        chat_openai(openai_server).invoke("hi")
    assert chat_openai(openai_server).invoke("hi").content == "Mock reply to: hi"


def test_openai_error_during_stream(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.queue_text("partial answer that breaks")
    openai_server.behaviour.fail_next(1, 500, during_stream=True)
    with pytest.raises(openai.APIError):
        list(chat_openai(openai_server).stream("hi"))


def test_openai_strict_models(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.strict_models = True
    with pytest.raises(openai.NotFoundError):
        chat_openai(openai_server, model="gpt-unknown").invoke("hi")
    assert chat_openai(openai_server).invoke("hi").content == "Mock reply to: hi"


def test_openai_max_tokens_truncates(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.queue_text("a" * 100)
    result = chat_openai(openai_server, max_completion_tokens=5).invoke("hi")
    assert result.content == "a" * 20
    assert result.response_metadata["finish_reason"] == "length"


def test_openai_models_list(openai_server: MockLLMServer) -> None:
    client = openai.OpenAI(base_url=openai_server.client_base_url, api_key=SECRET_KEY, max_retries=0)
    assert [model.id for model in client.models.list()] == openai_server.behaviour.models
    openai_server.behaviour.models = ["gpt-custom"]
    assert client.models.retrieve("gpt-custom").owned_by == "mock"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=openai_server.client_base_url, api_key="bad", max_retries=0).models.list()


def test_openai_latency(openai_server: MockLLMServer) -> None:
    openai_server.behaviour.latency_ms = 60
    started = time.perf_counter()
    chat_openai(openai_server).invoke("hi")
    assert time.perf_counter() - started >= 0.06


def test_openai_responder_callback(openai_server: MockLLMServer) -> None:
    seen: list[str] = []

    def responder(request: Any) -> MockReply | None:
        seen.append(request.model)
        return MockReply(text=f"{len(request.messages)} messages") if request.provider == "openai" else None

    openai_server.behaviour.responder = responder
    assert chat_openai(openai_server).invoke([HumanMessage("a"), HumanMessage("b")]).content == "2 messages"
    assert seen == [OPENAI_MODEL]


def test_request_log_redacts_keys(openai_server: MockLLMServer, anthropic_server: MockLLMServer) -> None:
    chat_openai(openai_server).invoke("hi")
    chat_anthropic(anthropic_server).invoke("hi")
    with pytest.raises(openai.AuthenticationError):
        chat_openai(openai_server, api_key="sk-leaked-wrong-key-999").invoke("hi")
    for server in (openai_server, anthropic_server):
        entries = server.behaviour.requests
        assert entries
        dumped = json.dumps([entry.to_dict() for entry in entries])
        assert SECRET_KEY not in dumped
        assert "sk-leaked-wrong-key-999" not in dumped
        for entry in entries:
            for name in ("authorization", "api-key", "x-api-key"):
                if name in entry.headers:
                    assert entry.headers[name] in (REDACTED, f"Bearer {REDACTED}")
    admin = httpx.get(f"{openai_server.base_url}/_mock/requests").json()
    assert SECRET_KEY not in json.dumps(admin)
    assert admin["requests"][-1]["status"] == 401


def test_admin_route_steers_server(openai_server: MockLLMServer) -> None:
    update = {
        "add_keys": ["sk-from-admin"],
        "script": [
            {"text": "scripted over http"},
            {"tool_calls": [{"name": "get_cpu_load", "arguments": {"host": "h", "minutes": 2}}]},
        ],
        "faults": [{"status": 503, "count": 1, "retry_after": 0.01}],
    }
    response = httpx.post(f"{openai_server.base_url}/_mock/behaviour", json=update)
    assert response.status_code == 200
    snapshot = response.json()
    assert snapshot["pending_replies"] == 2
    assert snapshot["faults"][0]["status"] == 503
    assert "sk-from-admin" not in response.text

    llm = chat_openai(openai_server, api_key="sk-from-admin", max_retries=1)
    assert llm.invoke("hi").content == "scripted over http"
    calls = llm.bind_tools([get_cpu_load]).invoke("hi").tool_calls
    assert calls[0]["args"] == {"host": "h", "minutes": 2}

    assert httpx.post(f"{openai_server.base_url}/_mock/behaviour", json={"latency_ms": "x"}).status_code == 422
    assert httpx.post(f"{openai_server.base_url}/_mock/reset").json()["pending_replies"] == 0
    assert httpx.delete(f"{openai_server.base_url}/_mock/requests").status_code == 204
    assert openai_server.behaviour.requests == []


def test_admin_token_protects_admin_routes() -> None:
    behaviour = MockBehaviour(kind="openai", admin_token="admin-secret")
    with MockLLMServer("openai", behaviour=behaviour) as server:
        assert httpx.get(f"{server.base_url}/_mock/behaviour").status_code == 401
        ok = httpx.get(f"{server.base_url}/_mock/behaviour", headers={"x-mock-admin-token": "admin-secret"})
        assert ok.status_code == 200
        assert server.api_key == DEFAULT_API_KEY


# ---------------------------------------------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------------------------------------------


def test_anthropic_invoke_with_usage(anthropic_server: MockLLMServer) -> None:
    anthropic_server.behaviour.queue_text("Restart the pod.")
    result = chat_anthropic(anthropic_server).invoke("What now?")
    assert result.content == "Restart the pod."
    assert result.response_metadata["stop_reason"] == "end_turn"
    assert result.usage_metadata is not None
    assert result.usage_metadata["input_tokens"] > 0
    assert result.usage_metadata["output_tokens"] == estimate_tokens("Restart the pod.")
    assert chat_anthropic(anthropic_server).invoke("Echo this").content == "Mock reply to: Echo this"


def test_anthropic_stream_chunks_and_usage(anthropic_server: MockLLMServer) -> None:
    anthropic_server.behaviour.queue_text("alpha beta gamma")
    chunks = list(chat_anthropic(anthropic_server).stream("go"))
    assert [c.content for c in chunks if c.content] == ["alpha", " beta", " gamma"]
    total = _aggregate(chunks)
    assert isinstance(total, AIMessageChunk)
    assert total.content == "alpha beta gamma"
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == estimate_tokens("alpha beta gamma")
    assert total.usage_metadata["input_tokens"] > 0
    assert total.response_metadata["stop_reason"] == "end_turn"


def test_anthropic_raw_sdk_event_sequence(anthropic_server: MockLLMServer) -> None:
    client = anthropic.Anthropic(base_url=anthropic_server.client_base_url, api_key=SECRET_KEY, max_retries=0)
    anthropic_server.behaviour.queue(
        MockReply(text="Checking.", tool_calls=[ToolCall(name="get_cpu_load", arguments={"host": "a", "minutes": 3})])
    )
    events = list(
        client.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": "load?"}],
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == 2 and kinds.count("content_block_stop") == 2
    deltas = [event.delta.type for event in events if event.type == "content_block_delta"]
    assert "text_delta" in deltas and "input_json_delta" in deltas

    message = client.messages.create(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": "load?"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    with client.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=256, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Mock reply to: hello"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == estimate_tokens("Mock reply to: hello")


async def test_anthropic_async_invoke_and_stream(anthropic_server: MockLLMServer) -> None:
    llm = chat_anthropic(anthropic_server)
    anthropic_server.behaviour.queue_text("first", "second part")
    assert (await llm.ainvoke("hi")).content == "first"
    total = _aggregate([chunk async for chunk in llm.astream("hi")])
    assert total.content == "second part"


def test_anthropic_bind_tools_round_trip(anthropic_server: MockLLMServer) -> None:
    llm = chat_anthropic(anthropic_server).bind_tools([get_cpu_load])
    first = llm.invoke([HumanMessage("load of web-1?")])
    assert first.response_metadata["stop_reason"] == "tool_use"
    assert len(first.tool_calls) == 1
    call = first.tool_calls[0]
    assert call["name"] == "get_cpu_load"
    assert call["args"] == {"host": "x", "minutes": 1}
    assert call["id"] and call["id"].startswith("toolu_")

    second = llm.invoke(
        [HumanMessage("load of web-1?"), first, ToolMessage(content="web-1: 0.42", tool_call_id=call["id"])]
    )
    assert not second.tool_calls
    assert second.content == "Tool result received: web-1: 0.42"
    sent = anthropic_server.behaviour.last_request("/v1/messages")
    assert sent is not None
    assert sent.body["messages"][2]["content"][0]["type"] == "tool_result"


def test_anthropic_stream_tool_call(anthropic_server: MockLLMServer) -> None:
    anthropic_server.behaviour.queue_tool_call("get_cpu_load", {"host": "db-9", "minutes": 30}, id="toolu_fixed")
    llm = chat_anthropic(anthropic_server).bind_tools([get_cpu_load])
    total = _aggregate(llm.stream("load?"))
    assert isinstance(total, AIMessageChunk)
    assert total.tool_calls == [
        {"name": "get_cpu_load", "args": {"host": "db-9", "minutes": 30}, "id": "toolu_fixed", "type": "tool_call"}
    ]
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0


def test_anthropic_structured_output(anthropic_server: MockLLMServer) -> None:
    structured = chat_anthropic(anthropic_server).with_structured_output(Diagnosis)
    assert structured.invoke("diagnose") == Diagnosis(summary="x", severity=1, affected_hosts=[])
    sent = anthropic_server.behaviour.last_request("/v1/messages")
    assert sent is not None
    assert sent.body["tool_choice"]["type"] in ("tool", "any")

    native = chat_anthropic(anthropic_server).with_structured_output(Diagnosis, method="json_schema")
    anthropic_server.behaviour.queue_json({"summary": "oom", "severity": 5, "affected_hosts": ["api-3"]})
    assert native.invoke("diagnose") == Diagnosis(summary="oom", severity=5, affected_hosts=["api-3"])
    assert native.invoke("diagnose") == Diagnosis(summary="x", severity=1, affected_hosts=[])
    sent = anthropic_server.behaviour.last_request("/v1/messages")
    assert sent is not None
    assert sent.body["output_config"]["format"]["type"] == "json_schema"


def test_anthropic_wrong_key_is_authentication_error(anthropic_server: MockLLMServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        chat_anthropic(anthropic_server, api_key="sk-ant-wrong").invoke("hi")
    assert info.value.status_code == 401
    raw = httpx.post(
        f"{anthropic_server.base_url}/v1/messages",
        json={"model": ANTHROPIC_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"},
    )
    body = raw.json()
    assert raw.status_code == 401
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert isinstance(body["error"]["message"], str)


def test_anthropic_x_api_key_and_version_header(anthropic_server: MockLLMServer) -> None:
    url = f"{anthropic_server.base_url}/v1/messages"
    body = {"model": ANTHROPIC_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "ping"}]}
    ok = httpx.post(url, json=body, headers={"x-api-key": SECRET_KEY, "anthropic-version": "2023-06-01"})
    assert ok.status_code == 200
    assert ok.json()["content"] == [{"type": "text", "text": "Mock reply to: ping"}]
    assert ok.headers["request-id"].startswith("req_")
    no_version = httpx.post(url, json=body, headers={"x-api-key": SECRET_KEY})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"
    no_max = httpx.post(
        url,
        json={"model": ANTHROPIC_MODEL, "messages": body["messages"]},
        headers={"x-api-key": SECRET_KEY, "anthropic-version": "2023-06-01"},
    )
    assert no_max.status_code == 400
    entry = anthropic_server.behaviour.requests_to("/v1/messages")[0]
    assert entry.headers["x-api-key"] == REDACTED


def test_anthropic_overloaded_then_success(anthropic_server: MockLLMServer) -> None:
    anthropic_server.behaviour.fail_next(1, 529, retry_after=0.01)
    anthropic_server.behaviour.fail_next(1, 429, retry_after=0.01)
    result = chat_anthropic(anthropic_server, max_retries=2).invoke("hi")
    assert result.content == "Mock reply to: hi"
    assert [e.status for e in anthropic_server.behaviour.requests_to("/v1/messages")] == [529, 429, 200]
    anthropic_server.behaviour.fail_next(1, 529)
    client = anthropic.Anthropic(base_url=anthropic_server.client_base_url, api_key=SECRET_KEY, max_retries=0)
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=ANTHROPIC_MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_anthropic_error_during_stream(anthropic_server: MockLLMServer) -> None:
    anthropic_server.behaviour.queue_text("this will break")
    anthropic_server.behaviour.fail_next(1, 529, during_stream=True)
    with pytest.raises(anthropic.APIStatusError):
        list(chat_anthropic(anthropic_server).stream("hi"))


def test_anthropic_models_list(anthropic_server: MockLLMServer) -> None:
    client = anthropic.Anthropic(base_url=anthropic_server.client_base_url, api_key=SECRET_KEY, max_retries=0)
    ids = [model.id for model in client.models.list()]
    assert ids == anthropic_server.behaviour.models
    page = client.models.list(limit=1)
    assert [m.id for m in page.data] == ids[:1]
    assert page.has_more is True and page.first_id == ids[0] and page.last_id == ids[0]
    second = client.models.list(limit=1, after_id=ids[0])
    assert [m.id for m in second.data] == ids[1:2]
    assert [m.id for m in client.models.list(limit=1)] == ids  # auto-pagination walks every page
    assert client.models.retrieve(ids[0]).type == "model"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=anthropic_server.client_base_url, api_key="bad", max_retries=0).models.list()


def test_anthropic_count_tokens(anthropic_server: MockLLMServer) -> None:
    client = anthropic.Anthropic(base_url=anthropic_server.client_base_url, api_key=SECRET_KEY, max_retries=0)
    counted = client.messages.count_tokens(model=ANTHROPIC_MODEL, messages=[{"role": "user", "content": "hello"}])
    assert counted.input_tokens > 0


# ---------------------------------------------------------------------------------------------------------------
# Runner and helpers
# ---------------------------------------------------------------------------------------------------------------


async def test_runner_async_context_manager() -> None:
    server = MockLLMServer("anthropic", models=["claude-x"])
    assert not server.running
    async with server:
        assert server.running and server.port > 0
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.base_url}/_mock/health")
            assert response.json() == {"status": "ok"}
        result = await chat_anthropic(server, model="claude-x", api_key=server.api_key).ainvoke("hi")
        assert result.content == "Mock reply to: hi"
    assert not server.running
    with pytest.raises(RuntimeError):
        _ = server.base_url


def test_runner_picks_distinct_free_ports() -> None:
    with MockLLMServer("openai") as first, MockLLMServer("openai") as second:
        assert first.port != second.port
        assert first.client_base_url.endswith("/v1")
        assert httpx.get(f"{second.base_url}/_mock/health").status_code == 200


def test_sample_from_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer", "minimum": 3},
            "ratio": {"type": "number"},
            "flag": {"type": "boolean"},
            "mode": {"enum": ["fast", "slow"]},
            "when": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "child": {"$ref": "#/$defs/Child"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "optional": {"type": "string"},
        },
        "required": ["name", "count", "ratio", "flag", "mode", "when", "tags", "child", "maybe"],
        "$defs": {"Child": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}},
    }
    assert sample_from_schema(schema) == {
        "name": "x",
        "count": 3,
        "ratio": 1,
        "flag": True,
        "mode": "fast",
        "when": "2024-01-01T00:00:00Z",
        "tags": ["x"],
        "child": {"id": "x"},
        "maybe": 1,
    }
    assert sample_from_schema(schema, required_only=False)["optional"] == "x"
