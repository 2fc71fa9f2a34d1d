"""Every provider family yields a working LangChain chat model, exercised over real HTTP against mocks."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.adapters.base import ClientConfigurationError
from aiops_executor.llm.adapters.dashscope import DASHSCOPE_BASE_URLS
from aiops_executor.llm.adapters.qianfan import QIANFAN_BASE_URL
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig, merged_params
from aiops_executor.llm.runtime.failover import build_client
from aiops_executor.llm.simulator import SimulatorChatModel
from tests.mock_providers import ANTHROPIC_KEY, OPENAI_KEY


def endpoint(base_url: str | None = None, **values: Any) -> EndpointConfig:
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": "primary",
        "base_url": base_url,
        "api_version": None,
        "region": None,
        "timeout_connect": 5.0,
        "timeout_read": 30.0,
        "retry_count": 0,
        "retry_interval": 0.0,
        "priority": 1,
    }
    defaults.update(values)
    return EndpointConfig(**defaults)


def model(provider_type: str, model_id: str, **values: Any) -> ModelConfig:
    defaults: dict[str, Any] = {
        "id": uuid.uuid4(),
        "provider_id": uuid.uuid4(),
        "provider_name": f"{provider_type}-test",
        "provider_type": provider_type,
        "model_id": model_id,
        "name": model_id,
        "status": "available",
        "input_price": Decimal("0.5"),
        "output_price": Decimal("1.5"),
    }
    defaults.update(values)
    return ModelConfig(**defaults)


@tool
def lookup_service(service: str) -> str:
    """Look a service up."""
    return f"{service}: ok"


OPENAI_FAMILIES = [
    ("openai", "gpt-4o-mini", {}),
    ("aliyun_dashscope", "qwen-plus", {}),
    ("baidu_qianfan", "ernie-4.0-8k", {}),
    ("vllm", "llama3.1", {}),
    ("openai_compatible", "gpt-4o", {}),
]


@pytest.mark.parametrize(("provider_type", "model_id", "extra"), OPENAI_FAMILIES)
async def test_openai_compatible_families(
    openai_mock: MockLLMServer, provider_type: str, model_id: str, extra: dict[str, Any]
) -> None:
    openai_mock.behaviour.queue_text(f"hello from {model_id}")
    client = build_client(
        model(provider_type, model_id), endpoint(openai_mock.client_base_url), DecryptedSecrets(OPENAI_KEY), {}
    )
    reply = await client.ainvoke([HumanMessage("hi")])
    assert reply.content == f"hello from {model_id}"
    assert reply.usage_metadata and reply.usage_metadata["input_tokens"] > 0
    request = openai_mock.behaviour.last_request("/chat/completions")
    assert request is not None and request.body["model"] == model_id
    assert request.headers["authorization"] == "Bearer REDACTED"


async def test_ollama_takes_its_server_root_and_needs_no_key(openai_mock: MockLLMServer) -> None:
    openai_mock.behaviour.allow_any_key = True
    openai_mock.behaviour.queue_text("llama says hi")
    client = build_client(model("ollama", "llama3.1"), endpoint(openai_mock.base_url), None, {})
    assert (await client.ainvoke("hi")).content == "llama says hi"
    assert openai_mock.behaviour.last_request("/chat/completions") is not None


async def test_azure_openai_uses_deployment_and_api_version(openai_mock: MockLLMServer) -> None:
    openai_mock.behaviour.queue_text("azure hello")
    client = build_client(
        model("azure_openai", "gpt-4o"),
        endpoint(openai_mock.azure_endpoint, api_version="2024-10-21"),
        DecryptedSecrets(OPENAI_KEY),
        {},
    )
    assert (await client.ainvoke("hi")).content == "azure hello"
    request = openai_mock.behaviour.last_request("/chat/completions")
    assert request is not None
    assert request.path == "/openai/deployments/gpt-4o/chat/completions"
    assert request.query["api-version"] == "2024-10-21"
    with pytest.raises(ClientConfigurationError):
        build_client(model("azure_openai", "gpt-4o"), endpoint(openai_mock.azure_endpoint), DecryptedSecrets("k"), {})


async def test_openai_streaming_and_tool_calls(openai_mock: MockLLMServer) -> None:
    client = build_client(
        model("openai", "gpt-4o-mini"), endpoint(openai_mock.client_base_url), DecryptedSecrets(OPENAI_KEY), {}
    )
    openai_mock.behaviour.queue_text("one two three four")
    chunks = [chunk async for chunk in client.astream("stream please")]
    assert len([c for c in chunks if c.content]) > 1
    assert "".join(str(c.content) for c in chunks) == "one two three four"
    assert any(c.usage_metadata for c in chunks)

    openai_mock.behaviour.queue_tool_call("lookup_service", {"service": "checkout"})
    reply = await client.bind_tools([lookup_service]).ainvoke("look up checkout")
    assert reply.tool_calls[0]["name"] == "lookup_service"
    assert reply.tool_calls[0]["args"] == {"service": "checkout"}


async def test_model_default_params_apply_and_agent_overrides_win(openai_mock: MockLLMServer) -> None:
    configured = model(
        "openai", "gpt-4o-mini", default_params={"temperature": 0.1, "top_p": 0.9, "seed": 7}, max_output_tokens=256
    )
    params = merged_params(configured, {"temperature": 0.7, "max_tokens": None})
    assert params == {"temperature": 0.7, "top_p": 0.9, "seed": 7, "max_tokens": 256}
    client = build_client(configured, endpoint(openai_mock.client_base_url), DecryptedSecrets(OPENAI_KEY), params)
    await client.ainvoke("hi")
    body = openai_mock.behaviour.last_request("/chat/completions").body  # type: ignore[union-attr]
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 256


@pytest.mark.parametrize(
    ("provider_type", "field", "other"),
    [
        ("openai", "max_completion_tokens", "max_tokens"),
        # llama.cpp's server and other OpenAI-compatible servers ignore max_completion_tokens.
        ("openai_compatible", "max_tokens", "max_completion_tokens"),
        ("vllm", "max_tokens", "max_completion_tokens"),
        ("ollama", "max_tokens", "max_completion_tokens"),
    ],
)
async def test_the_completion_limit_is_sent_under_the_name_each_server_reads(
    openai_mock: MockLLMServer, provider_type: str, field: str, other: str
) -> None:
    client = build_client(
        model(provider_type, "gpt-4o-mini"),
        endpoint(openai_mock.client_base_url),
        DecryptedSecrets(OPENAI_KEY),
        {"max_tokens": 64, "extra_body": {"top_k": 5}},
    )
    await client.ainvoke("hi")
    body = openai_mock.behaviour.last_request("/chat/completions").body  # type: ignore[union-attr]
    assert body[field] == 64 and other not in body
    assert body["top_k"] == 5  # a configured extra_body is kept


async def test_anthropic_invoke_stream_and_tools(anthropic_mock: MockLLMServer) -> None:
    client = build_client(
        model("anthropic", "claude-sonnet-4-6"),
        endpoint(anthropic_mock.client_base_url),
        DecryptedSecrets(ANTHROPIC_KEY),
        {"max_tokens": 512},
    )
    anthropic_mock.behaviour.queue_text("claude hello")
    assert (await client.ainvoke("hi")).content == "claude hello"
    anthropic_mock.behaviour.queue_text("streamed claude answer")
    text = "".join(
        [
            str(c.content)
            if isinstance(c.content, str)
            else "".join(b.get("text", "") for b in c.content if isinstance(b, dict))
            async for c in client.astream("hi")
        ]
    )
    assert text == "streamed claude answer"
    anthropic_mock.behaviour.queue_tool_call("lookup_service", {"service": "orders"})
    reply = await client.bind_tools([lookup_service]).ainvoke("look up orders")
    assert reply.tool_calls[0]["args"] == {"service": "orders"}
    body = anthropic_mock.behaviour.last_request("/v1/messages").body  # type: ignore[union-attr]
    assert body["max_tokens"] == 512


def test_bedrock_converse_with_botocore_stubbing() -> None:
    from botocore.stub import Stubber

    configured = model("aws_bedrock", "anthropic.claude-3-haiku-20240307-v1:0")
    client = build_client(
        configured,
        endpoint(None, region="us-east-1"),
        DecryptedSecrets("AKIAEXAMPLE", "secret", "session"),
        {"temperature": 0.2},
    )
    stubber = Stubber(client.client)  # type: ignore[attr-defined]
    stubber.add_response(
        "converse",
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "bedrock hello"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7},
            "metrics": {"latencyMs": 10},
        },
        {
            "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [],
            "inferenceConfig": {"temperature": 0.2},
        },
    )
    with stubber:
        reply = client.invoke("hi")
    assert reply.content == "bedrock hello"
    assert reply.usage_metadata and reply.usage_metadata["total_tokens"] == 7
    stubber.assert_no_pending_responses()
    assert client.client.meta.region_name == "us-east-1"  # type: ignore[attr-defined]
    with pytest.raises(ClientConfigurationError, match="region"):
        build_client(configured, endpoint(None), DecryptedSecrets("a", "b"), {})
    with pytest.raises(ClientConfigurationError, match="secret access key"):
        build_client(configured, endpoint(None, region="us-east-1"), DecryptedSecrets("a"), {})


def test_simulator_needs_nothing_and_takes_latency() -> None:
    client = build_client(model("simulator", "sim-1"), None, None, {"latency_ms": 25})
    assert isinstance(client, SimulatorChatModel) and client.latency_ms == 25


def effective_base_url(provider_type: str, configured: EndpointConfig) -> str | None:
    return adapter_for(provider_type).base_url(configured)


def test_region_aware_default_base_urls() -> None:
    assert effective_base_url("aliyun_dashscope", endpoint(None)) == DASHSCOPE_BASE_URLS["cn"]
    assert (
        effective_base_url("aliyun_dashscope", endpoint(None, region="ap-southeast-1")) == DASHSCOPE_BASE_URLS["intl"]
    )
    assert effective_base_url("baidu_qianfan", endpoint(None)) == QIANFAN_BASE_URL
    assert effective_base_url("openai", endpoint(None)) == "https://api.openai.com/v1"
    assert effective_base_url("ollama", endpoint("http://gpu-box:11434/")) == "http://gpu-box:11434/v1"
    assert effective_base_url("vllm", endpoint("http://vllm:8000/v1")) == "http://vllm:8000/v1"


def test_secrets_never_show_in_repr() -> None:
    secrets = DecryptedSecrets("sk-very-secret-1234", "aws-secret", "token")
    assert "sk-very" not in repr(secrets) and "aws-secret" not in str(secrets)
    assert "sk-very" not in json.dumps(repr(secrets))


def test_endpoint_timeouts_reach_every_client_and_retries_are_left_to_failover() -> None:
    import boto3
    from botocore.config import Config

    from aiops_executor.llm.adapters.bedrock import bedrock_control_client

    configured = endpoint("http://127.0.0.1:9/v1", timeout_connect=4.0, timeout_read=25.0, api_version="2024-10-21")
    for provider_type in ("openai", "azure_openai", "vllm"):
        openai_style = build_client(model(provider_type, "gpt-4o"), configured, DecryptedSecrets("k"), {})
        timeout = openai_style.request_timeout  # type: ignore[attr-defined]
        assert (timeout.connect, timeout.read, openai_style.max_retries) == (4.0, 25.0, 0), provider_type  # type: ignore[attr-defined]
    claude = build_client(model("anthropic", "claude-haiku-4-5"), configured, DecryptedSecrets("k"), {})
    assert (claude.default_request_timeout, claude.max_retries) == (25.0, 0)  # type: ignore[attr-defined]

    bedrock_endpoint = endpoint(
        "https://vpce-123.bedrock-runtime.eu-west-1.vpce.amazonaws.com",
        region="eu-west-1",
        timeout_connect=4.0,
        timeout_read=25.0,
    )
    secrets = DecryptedSecrets("AKIAEXAMPLE", "secret-access-key", "session-token")
    bedrock = build_client(
        model("aws_bedrock", "anthropic.claude-3-haiku-20240307-v1:0"), bedrock_endpoint, secrets, {}
    ).client  # type: ignore[attr-defined]
    control = bedrock_control_client(bedrock_endpoint, secrets, boto3.session.Session(), Config)
    for boto_client in (bedrock, control):
        config = boto_client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (4.0, 25.0)
        assert config.retries["total_max_attempts"] == 1, "botocore must not retry behind the failover layer"
        assert boto_client.meta.region_name == "eu-west-1"
        credentials = boto_client._request_signer._credentials
        assert (credentials.access_key, credentials.secret_key, credentials.token) == (
            "AKIAEXAMPLE",
            "secret-access-key",
            "session-token",
        )
    assert bedrock.meta.endpoint_url == "https://vpce-123.bedrock-runtime.eu-west-1.vpce.amazonaws.com"


async def test_a_slow_endpoint_times_out_at_its_read_timeout(openai_mock: MockLLMServer) -> None:
    import time

    from aiops_executor.llm.runtime.errors import FailureKind

    openai_mock.behaviour.latency_ms = 1500
    client = build_client(
        model("openai", "gpt-4o-mini"),
        endpoint(openai_mock.client_base_url, timeout_read=0.3),
        DecryptedSecrets(OPENAI_KEY),
        {},
    )
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:  # whichever timeout class the SDK raises
        await client.ainvoke("hi")
    assert time.perf_counter() - started < 1.2
    assert adapter_for("openai").classify(caught.value).kind is FailureKind.unreachable
