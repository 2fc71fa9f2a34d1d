"""Any server speaking OpenAI's chat-completions protocol at a base URL of the user's (LiteLLM, LocalAI,
llama.cpp's server, LM Studio, ...). The other OpenAI-protocol adapters build on this one."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any, ClassVar

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.core import egress
from aiops_executor.llm.adapters.base import (
    JSON_SCHEMA,
    PROMPTED_JSON,
    TOOL_CALLING,
    ClientConfigurationError,
    EndpointProblem,
    ProviderAdapter,
    RemoteModel,
    as_fields,
    extra_params,
    require_endpoint,
    sampling_params,
    sdk_timeout,
)
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig


class OpenAICompatibleAdapter(ProviderAdapter):
    type: ClassVar[str] = "openai_compatible"
    # llama.cpp, vLLM and Ollama enforce a response_format JSON Schema with a grammar; several of them reject
    # tool_choice "required", which is why tool calling comes second and names its tool.
    structured_output: ClassVar[tuple[str, ...]] = (JSON_SCHEMA, TOOL_CALLING, PROMPTED_JSON)
    requires_base_url: ClassVar[bool] = True
    # Whether the completion limit goes in the body as ``max_tokens`` (OpenAI itself takes max_completion_tokens).
    max_tokens_in_body: ClassVar[bool] = True

    def endpoint_problems(self, values: Mapping[str, Any]) -> list[EndpointProblem]:
        if self.requires_base_url and not values.get("base_url"):
            return [EndpointProblem("base_url", f"an {self.type} provider needs a base_url")]
        return []

    def api_key(self, secrets: DecryptedSecrets | None) -> str:
        if secrets is None or not secrets.api_key:
            raise ClientConfigurationError(f"provider type {self.type} needs a credential")
        return secrets.api_key

    def default_headers(self, secrets: DecryptedSecrets | None) -> dict[str, str]:
        return {}

    def common_client_params(
        self,
        secrets: DecryptedSecrets | None,
        endpoint: EndpointConfig,
        params: dict[str, Any],
        client_class: builtins.type[BaseChatModel] | None = None,
    ) -> dict[str, Any]:
        """Constructor arguments every ``ChatOpenAI``-family client of this adapter takes."""
        from langchain_openai import ChatOpenAI

        sampling = sampling_params(params)
        fields = as_fields(client_class or ChatOpenAI, extra_params(params))
        if self.max_tokens_in_body and "max_tokens" in sampling:
            # ChatOpenAI renames max_tokens to OpenAI's newer max_completion_tokens, which llama.cpp's server and
            # other OpenAI-compatible servers ignore (generation then runs to the end of the context).
            fields["extra_body"] = {**(fields.get("extra_body") or {}), "max_tokens": sampling.pop("max_tokens")}
        return {
            "api_key": self.api_key(secrets),
            # Every request and redirect hop is checked against the egress policy, sent to the checked address,
            # and the key goes only to the endpoint's own origin.
            **egress.sdk_http_clients(self.base_url(endpoint)),
            "timeout": sdk_timeout(endpoint),
            "max_retries": 0,
            # Sends stream_options.include_usage, so a streamed answer reports its tokens where the server can.
            "stream_usage": True,
            **sampling,
            **fields,
        }

    def build_client(
        self,
        model: ModelConfig,
        endpoint: EndpointConfig | None,
        secrets: DecryptedSecrets | None,
        params: dict[str, Any],
    ) -> BaseChatModel:
        from langchain_openai import ChatOpenAI

        endpoint = require_endpoint(endpoint, self.type)
        headers = self.default_headers(secrets)
        return ChatOpenAI(
            model=model.model_id,
            base_url=self.base_url(endpoint),
            default_headers=headers or None,
            **self.common_client_params(secrets, endpoint, params),
        )

    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        import openai

        endpoint = require_endpoint(endpoint, self.type)
        client = openai.AsyncOpenAI(
            api_key=self.api_key(secrets),
            base_url=self.base_url(endpoint),
            http_client=egress.sdk_http_clients(self.base_url(endpoint))["http_async_client"],
            default_headers=self.default_headers(secrets) or None,
            timeout=sdk_timeout(endpoint),
            max_retries=0,
        )
        async with client:
            return [RemoteModel(model.id) async for model in client.models.list()]

    def structured_request(self, method: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
        if method != JSON_SCHEMA:
            return super().structured_request(method, schema, name)
        return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}}
