"""Anthropic's Messages API (api.anthropic.com unless the endpoint names another base URL)."""

from __future__ import annotations

from functools import cache, cached_property
from typing import Any, ClassVar

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.core import egress
from aiops_executor.llm.adapters.base import (
    ProviderAdapter,
    RemoteModel,
    as_fields,
    extra_params,
    require_endpoint,
    require_secrets,
    sampling_params,
    sdk_timeout,
)
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig

ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"


@cache
def egress_chat_anthropic() -> type[BaseChatModel]:
    """``ChatAnthropic`` whose SDK clients go through the egress policy's transport: every request and redirect
    hop is checked and pinned, and the key (``x-api-key``) goes only to the endpoint's origin.

    Made on first use: importing the Anthropic SDK took a third of every process's start-up (the CLI's, a
    worker's), most of which never call Anthropic."""
    from langchain_anthropic import ChatAnthropic

    class EgressChatAnthropic(ChatAnthropic):
        def _egress_clients(self) -> dict[str, Any]:
            return egress.sdk_http_clients(self.anthropic_api_url, ANTHROPIC_DEFAULT_BASE_URL)

        @cached_property
        def _client(self) -> Any:
            import anthropic

            return anthropic.Client(**self._client_params, http_client=self._egress_clients()["http_client"])

        @cached_property
        def _async_client(self) -> Any:
            import anthropic

            http_client = self._egress_clients()["http_async_client"]
            return anthropic.AsyncClient(**self._client_params, http_client=http_client)

    return EgressChatAnthropic


class AnthropicAdapter(ProviderAdapter):
    type: ClassVar[str] = "anthropic"

    def build_client(
        self,
        model: ModelConfig,
        endpoint: EndpointConfig | None,
        secrets: DecryptedSecrets | None,
        params: dict[str, Any],
    ) -> BaseChatModel:
        endpoint = require_endpoint(endpoint, self.type)
        secrets = require_secrets(secrets, self.type)
        anthropic_params: dict[str, Any] = {
            "model": model.model_id,
            "api_key": secrets.api_key,
            "timeout": endpoint.timeout_read,
            "max_retries": 0,
            "stream_usage": True,
            **sampling_params(params),
        }
        if endpoint.base_url:
            anthropic_params["base_url"] = endpoint.base_url
        chat_class = egress_chat_anthropic()
        anthropic_params.update(as_fields(chat_class, extra_params(params)))
        return chat_class(**anthropic_params)

    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        import anthropic

        endpoint = require_endpoint(endpoint, self.type)
        secrets = require_secrets(secrets, self.type)
        kwargs: dict[str, Any] = {"api_key": secrets.api_key, "timeout": sdk_timeout(endpoint), "max_retries": 0}
        if endpoint.base_url:
            kwargs["base_url"] = endpoint.base_url
        kwargs["http_client"] = egress.sdk_http_clients(endpoint.base_url, ANTHROPIC_DEFAULT_BASE_URL)[
            "http_async_client"
        ]
        client = anthropic.AsyncAnthropic(**kwargs)
        async with client:
            return [RemoteModel(model.id, model.display_name) async for model in client.models.list()]
