"""Cheap, authenticated calls that ask a provider which models it serves.

Listing models is the probe behind endpoint health checks, credential validation and model sync: it
proves the endpoint answers and the key is accepted, without spending tokens. Each provider family is
asked through its own official client library.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from aiops_executor.llm.runtime.clients import OPENAI_STYLE, ClientConfigurationError, effective_base_url
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig

SIMULATOR_MODELS = ("sim-1",)


@dataclass(frozen=True)
class RemoteModel:
    model_id: str
    name: str | None = None


def _timeout(endpoint: EndpointConfig) -> httpx.Timeout:
    return httpx.Timeout(endpoint.timeout_read, connect=endpoint.timeout_connect)


def _sdk_timeout(endpoint: EndpointConfig) -> Any:
    """The official SDKs bundle their own httpx build; give them their own Timeout type."""
    import openai

    return openai.Timeout(endpoint.timeout_read, connect=endpoint.timeout_connect)


async def list_remote_models(
    provider_type: str, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None
) -> list[RemoteModel]:
    """The provider's model catalogue, via its real API. Raises the client library's errors."""
    if provider_type == "simulator":
        return [RemoteModel(model_id, "Simulator (not an AI)") for model_id in SIMULATOR_MODELS]
    if endpoint is None:
        raise ClientConfigurationError(f"provider type {provider_type} needs an endpoint")
    if provider_type == "ollama":
        return await _ollama_tags(endpoint, secrets)
    if provider_type == "azure_openai":
        return await _azure_models(endpoint, _require(secrets))
    if provider_type in OPENAI_STYLE:
        return await _openai_models(provider_type, endpoint, _require(secrets))
    if provider_type == "anthropic":
        return await _anthropic_models(endpoint, _require(secrets))
    if provider_type == "aws_bedrock":
        return await asyncio.to_thread(_bedrock_models, endpoint, _require(secrets))
    raise ClientConfigurationError(f"unknown provider type {provider_type!r}")


def _require(secrets: DecryptedSecrets | None) -> DecryptedSecrets:
    if secrets is None:
        raise ClientConfigurationError("this provider needs a credential")
    return secrets


async def _openai_models(provider_type: str, endpoint: EndpointConfig, secrets: DecryptedSecrets) -> list[RemoteModel]:
    import openai

    client = openai.AsyncOpenAI(
        api_key=secrets.api_key,
        base_url=effective_base_url(provider_type, endpoint),
        timeout=_sdk_timeout(endpoint),
        max_retries=0,
    )
    async with client:
        return [RemoteModel(model.id) async for model in client.models.list()]


async def _azure_models(endpoint: EndpointConfig, secrets: DecryptedSecrets) -> list[RemoteModel]:
    import openai

    if not endpoint.base_url or not endpoint.api_version:
        raise ClientConfigurationError("an Azure OpenAI endpoint needs base_url and api_version")
    client = openai.AsyncAzureOpenAI(
        api_key=secrets.api_key,
        azure_endpoint=endpoint.base_url,
        api_version=endpoint.api_version,
        timeout=_sdk_timeout(endpoint),
        max_retries=0,
    )
    async with client:
        return [RemoteModel(model.id) async for model in client.models.list()]


async def _anthropic_models(endpoint: EndpointConfig, secrets: DecryptedSecrets) -> list[RemoteModel]:
    import anthropic

    kwargs: dict[str, Any] = {"api_key": secrets.api_key, "timeout": _sdk_timeout(endpoint), "max_retries": 0}
    if endpoint.base_url:
        kwargs["base_url"] = endpoint.base_url
    client = anthropic.AsyncAnthropic(**kwargs)
    async with client:
        return [RemoteModel(model.id, model.display_name) async for model in client.models.list()]


async def _ollama_tags(endpoint: EndpointConfig, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
    base = (endpoint.base_url or "").rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    headers = {"Authorization": f"Bearer {secrets.api_key}"} if secrets else {}
    async with httpx.AsyncClient(timeout=_timeout(endpoint)) as client:
        response = await client.get(f"{base}/api/tags", headers=headers)
        response.raise_for_status()
        payload = response.json()
    return [RemoteModel(str(m.get("name") or m.get("model"))) for m in payload.get("models", [])]


def _bedrock_models(endpoint: EndpointConfig, secrets: DecryptedSecrets) -> list[RemoteModel]:
    import boto3
    from botocore.config import Config

    if not endpoint.region:
        raise ClientConfigurationError("an AWS Bedrock endpoint needs a region")
    client = bedrock_control_client(endpoint, secrets, boto3.session.Session(), Config)
    response = client.list_foundation_models()
    return [
        RemoteModel(str(summary["modelId"]), summary.get("modelName")) for summary in response.get("modelSummaries", [])
    ]


def bedrock_control_client(endpoint: EndpointConfig, secrets: DecryptedSecrets, session: Any, config_cls: Any) -> Any:
    """The Bedrock control-plane client (model catalogue); the runtime endpoint override does not apply to it."""
    return session.client(
        "bedrock",
        region_name=endpoint.region,
        aws_access_key_id=secrets.api_key,
        aws_secret_access_key=secrets.secret_key,
        aws_session_token=secrets.access_token,
        config=config_cls(
            connect_timeout=endpoint.timeout_connect,
            read_timeout=endpoint.timeout_read,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )
