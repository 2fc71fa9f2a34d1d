"""Azure OpenAI: deployments of a resource (``base_url``) at an ``api_version``; the model id is the deployment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.core import egress
from aiops_executor.llm.adapters.base import (
    ClientConfigurationError,
    EndpointProblem,
    RemoteModel,
    require_endpoint,
    sdk_timeout,
)
from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig


def _resource(endpoint: EndpointConfig) -> tuple[str, str]:
    if not endpoint.base_url or not endpoint.api_version:
        raise ClientConfigurationError("an Azure OpenAI endpoint needs base_url and api_version")
    return endpoint.base_url, endpoint.api_version


class AzureOpenAIAdapter(OpenAICompatibleAdapter):
    type: ClassVar[str] = "azure_openai"
    max_tokens_in_body: ClassVar[bool] = False  # Azure reads max_completion_tokens, as OpenAI does

    def endpoint_problems(self, values: Mapping[str, Any]) -> list[EndpointProblem]:
        problems = super().endpoint_problems(values)
        if not values.get("api_version"):
            problems.append(EndpointProblem("api_version", "an azure_openai provider needs an api_version"))
        return problems

    def build_client(
        self,
        model: ModelConfig,
        endpoint: EndpointConfig | None,
        secrets: DecryptedSecrets | None,
        params: dict[str, Any],
    ) -> BaseChatModel:
        from langchain_openai import AzureChatOpenAI

        endpoint = require_endpoint(endpoint, self.type)
        base_url, api_version = _resource(endpoint)
        return AzureChatOpenAI(
            azure_endpoint=base_url,
            azure_deployment=model.model_id,
            api_version=api_version,
            **self.common_client_params(secrets, endpoint, params, AzureChatOpenAI),
        )

    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        import openai

        endpoint = require_endpoint(endpoint, self.type)
        api_key = self.api_key(secrets)
        base_url, api_version = _resource(endpoint)
        client = openai.AsyncAzureOpenAI(
            api_key=api_key,
            azure_endpoint=base_url,
            api_version=api_version,
            http_client=egress.sdk_http_clients(base_url)["http_async_client"],
            timeout=sdk_timeout(endpoint),
            max_retries=0,
        )
        async with client:
            return [RemoteModel(model.id) async for model in client.models.list()]
