"""Builds the LangChain chat model for one (provider type, endpoint, credential, model) combination."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig
from aiops_executor.llm.simulator import SimulatorChatModel

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
DASHSCOPE_BASE_URLS = {
    "cn": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "intl": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
# DashScope's international deployment serves these regions; everything else goes to mainland China.
DASHSCOPE_INTL_REGIONS = frozenset({"intl", "ap-southeast-1", "singapore", "sg"})
QIANFAN_BASE_URL = "https://qianfan.baidubce.com/v2"
OLLAMA_PLACEHOLDER_KEY = "ollama"  # Ollama ignores the key, but the OpenAI client insists on one.

# Sampling parameters every client understands under the same name.
COMMON_PARAMS = ("temperature", "top_p", "max_tokens")
# Runtime-only parameters that are ours, not the provider's.
RUNTIME_PARAMS = frozenset({"latency_ms"})

OPENAI_STYLE = frozenset(
    {"openai", "azure_openai", "aliyun_dashscope", "baidu_qianfan", "ollama", "vllm", "openai_compatible"}
)


class ClientConfigurationError(ValueError):
    """The stored configuration cannot produce a client (e.g. a Bedrock endpoint without a region)."""


def dashscope_base_url(region: str | None) -> str:
    key = "intl" if (region or "").lower() in DASHSCOPE_INTL_REGIONS else "cn"
    return DASHSCOPE_BASE_URLS[key]


def effective_base_url(provider_type: str, endpoint: EndpointConfig | None) -> str | None:
    """The base URL calls go to, applying each provider's documented default."""
    configured = endpoint.base_url.rstrip("/") if endpoint and endpoint.base_url else None
    if provider_type == "ollama" and configured and not configured.endswith("/v1"):
        return configured + "/v1"
    if configured:
        return configured
    region = endpoint.region if endpoint else None
    return {
        "openai": OPENAI_DEFAULT_BASE_URL,
        "aliyun_dashscope": dashscope_base_url(region),
        "baidu_qianfan": QIANFAN_BASE_URL,
    }.get(provider_type)


def merged_params(model: ModelConfig, overrides: dict[str, Any] | None) -> dict[str, Any]:
    params = dict(model.default_params)
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "max_tokens" not in params and model.max_output_tokens:
        params["max_tokens"] = model.max_output_tokens
    return params


def build_client(
    model: ModelConfig,
    endpoint: EndpointConfig | None,
    secrets: DecryptedSecrets | None,
    params: dict[str, Any],
) -> BaseChatModel:
    """A chat model for one route. Retries are left to the failover layer (``max_retries=0``)."""
    provider_type = model.provider_type
    sampling = {k: params[k] for k in COMMON_PARAMS if k in params}
    extra = {k: v for k, v in params.items() if k not in COMMON_PARAMS and k not in RUNTIME_PARAMS}

    if provider_type == "simulator":
        return SimulatorChatModel(model_id=model.model_id, latency_ms=float(params.get("latency_ms", 0) or 0))
    if endpoint is None:
        raise ClientConfigurationError(f"provider type {provider_type} needs an endpoint")

    timeout = _timeout(endpoint)
    if provider_type in OPENAI_STYLE:
        api_key = secrets.api_key if secrets else None
        if provider_type == "ollama":
            api_key = api_key or OLLAMA_PLACEHOLDER_KEY
        if not api_key:
            raise ClientConfigurationError(f"provider type {provider_type} needs a credential")
        from langchain_openai import AzureChatOpenAI, ChatOpenAI

        common: dict[str, Any] = {
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": 0,
            "stream_usage": True,
            **sampling,
            **_as_fields(AzureChatOpenAI if provider_type == "azure_openai" else ChatOpenAI, extra),
        }
        if provider_type == "azure_openai":
            if not endpoint.base_url or not endpoint.api_version:
                raise ClientConfigurationError("an Azure OpenAI endpoint needs base_url and api_version")
            return AzureChatOpenAI(
                azure_endpoint=endpoint.base_url,
                azure_deployment=model.model_id,
                api_version=endpoint.api_version,
                **common,
            )
        headers = {}
        if provider_type == "baidu_qianfan" and secrets and secrets.secret_key:
            # Qianfan v2 scopes a bearer key to an application with the appid header.
            headers["appid"] = secrets.secret_key
        return ChatOpenAI(
            model=model.model_id,
            base_url=effective_base_url(provider_type, endpoint),
            default_headers=headers or None,
            **common,
        )
    if provider_type == "anthropic":
        from langchain_anthropic import ChatAnthropic

        if not secrets:
            raise ClientConfigurationError("provider type anthropic needs a credential")
        anthropic_params: dict[str, Any] = {
            "model": model.model_id,
            "api_key": secrets.api_key,
            "timeout": endpoint.timeout_read,
            "max_retries": 0,
            "stream_usage": True,
            **sampling,
        }
        if endpoint.base_url:
            anthropic_params["base_url"] = endpoint.base_url
        anthropic_params.update(_as_fields(ChatAnthropic, extra))
        return ChatAnthropic(**anthropic_params)
    if provider_type == "aws_bedrock":
        from botocore.config import Config
        from langchain_aws import ChatBedrockConverse

        if not endpoint.region:
            raise ClientConfigurationError("an AWS Bedrock endpoint needs a region")
        if not secrets or not secrets.secret_key:
            raise ClientConfigurationError("AWS Bedrock needs an access key id and a secret access key")
        bedrock_params: dict[str, Any] = {
            "model": model.model_id,
            "region_name": endpoint.region,
            "aws_access_key_id": secrets.api_key,
            "aws_secret_access_key": secrets.secret_key,
            "config": Config(
                connect_timeout=endpoint.timeout_connect,
                read_timeout=endpoint.timeout_read,
                # One attempt: botocore's own ``max_attempts`` counts retries, so it would still retry once.
                retries={"total_max_attempts": 1, "mode": "standard"},
            ),
            **sampling,
        }
        if secrets.access_token:
            bedrock_params["aws_session_token"] = secrets.access_token
        if endpoint.base_url:
            bedrock_params["endpoint_url"] = endpoint.base_url
        if extra:
            bedrock_params["additional_model_request_fields"] = extra
        return ChatBedrockConverse(**bedrock_params)
    raise ClientConfigurationError(f"unknown provider type {provider_type!r}")


def _as_fields(client_class: type[BaseChatModel], extra: dict[str, Any]) -> dict[str, Any]:
    """Extra model parameters as constructor arguments: the client's own fields by name, the rest as
    ``model_kwargs`` (sent verbatim in the request body)."""
    names = {alias for name, info in client_class.model_fields.items() for alias in (name, info.alias) if alias}
    known = {k: v for k, v in extra.items() if k in names}
    unknown = {k: v for k, v in extra.items() if k not in names}
    return {**known, **({"model_kwargs": unknown} if unknown else {})}


def _timeout(endpoint: EndpointConfig) -> Any:
    import openai

    return openai.Timeout(endpoint.timeout_read, connect=endpoint.timeout_connect)
