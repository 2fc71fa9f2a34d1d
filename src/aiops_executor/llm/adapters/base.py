"""What every provider adapter offers, and the helpers the OpenAI-protocol adapters share.

A provider type is one adapter module: its endpoint rules, how its chat client is built, how its model
catalogue is read (the cheap authenticated call behind health checks, credential validation and model sync),
which structured-output strategies its servers understand, how usage is read from an answer, and how its
client library's errors are classified. The rest of the service asks ``adapter_for(provider_type)`` and
never switches on the type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage

from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig
from aiops_executor.llm.runtime.errors import Failure, classify_http_failure

# Sampling parameters every client understands under the same name.
COMMON_PARAMS = ("temperature", "top_p", "max_tokens")
# Runtime-only parameters that are ours, not the provider's.
RUNTIME_PARAMS = frozenset({"latency_ms"})

# Structured-output strategies, in the engine's vocabulary (see ``engine.structured``).
JSON_SCHEMA = "json_schema"  # the server enforces a JSON Schema (OpenAI response_format; a grammar in llama.cpp)
TOOL_CALLING = "tool_calling"  # the answer is a call of one tool whose arguments are the object
PROMPTED_JSON = "prompted_json"  # the prompt asks for JSON; the answer is parsed, validated and repaired


class ClientConfigurationError(ValueError):
    """The stored configuration cannot produce a client (e.g. a Bedrock endpoint without a region)."""


@dataclass(frozen=True)
class RemoteModel:
    model_id: str
    name: str | None = None


@dataclass(frozen=True)
class EndpointProblem:
    field: str
    message: str


def sampling_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in COMMON_PARAMS if k in params}


def extra_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in COMMON_PARAMS and k not in RUNTIME_PARAMS}


def as_fields(client_class: type[BaseChatModel], extra: dict[str, Any]) -> dict[str, Any]:
    """Extra model parameters as constructor arguments: the client's own fields by name, the rest as
    ``model_kwargs`` (sent verbatim in the request body)."""
    names = {alias for name, info in client_class.model_fields.items() for alias in (name, info.alias) if alias}
    known = {k: v for k, v in extra.items() if k in names}
    unknown = {k: v for k, v in extra.items() if k not in names}
    return {**known, **({"model_kwargs": unknown} if unknown else {})}


def sdk_timeout(endpoint: EndpointConfig) -> Any:
    """The official SDKs bundle their own httpx build; give them their own Timeout type."""
    import openai

    return openai.Timeout(endpoint.timeout_read, connect=endpoint.timeout_connect)


def http_timeout(endpoint: EndpointConfig) -> httpx.Timeout:
    return httpx.Timeout(endpoint.timeout_read, connect=endpoint.timeout_connect)


def require_secrets(secrets: DecryptedSecrets | None, provider_type: str) -> DecryptedSecrets:
    if secrets is None:
        raise ClientConfigurationError(f"provider type {provider_type} needs a credential")
    return secrets


def require_endpoint(endpoint: EndpointConfig | None, provider_type: str) -> EndpointConfig:
    if endpoint is None:
        raise ClientConfigurationError(f"provider type {provider_type} needs an endpoint")
    return endpoint


class ProviderAdapter(ABC):
    """One provider family. Stateless: one instance per type serves every endpoint of that type."""

    type: ClassVar[str]
    # Offline providers (the simulator) take neither endpoints nor credentials.
    takes_endpoints: ClassVar[bool] = True
    takes_credentials: ClassVar[bool] = True
    # Whether a call needs a credential (Ollama serves without one).
    needs_credential: ClassVar[bool] = True
    # Strategies its servers may understand, best first; what a server rejects is skipped for that model.
    structured_output: ClassVar[tuple[str, ...]] = (TOOL_CALLING, PROMPTED_JSON)

    def endpoint_problems(self, values: Mapping[str, Any]) -> list[EndpointProblem]:
        """What an endpoint of this type lacks (``values``: ``base_url``, ``api_version``, ``region``)."""
        return []

    def base_url(self, endpoint: EndpointConfig | None) -> str | None:
        """Where calls go, applying the provider's documented default."""
        return endpoint.base_url.rstrip("/") if endpoint and endpoint.base_url else None

    @abstractmethod
    def build_client(
        self,
        model: ModelConfig,
        endpoint: EndpointConfig | None,
        secrets: DecryptedSecrets | None,
        params: dict[str, Any],
    ) -> BaseChatModel:
        """A chat model for one route. Retries are left to the failover layer (no retries in the client)."""

    @abstractmethod
    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        """The provider's model catalogue through its real API; raises the client library's errors."""

    def structured_request(self, method: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
        """Request parameters for a structured-output strategy that is not tool calling (``JSON_SCHEMA``)."""
        raise ClientConfigurationError(f"provider type {self.type} has no {method} structured output")

    def usage(self, message: AIMessage) -> tuple[int | None, int | None]:
        """Input and output tokens of an answer; None where the provider did not report them (unknown, not 0)."""
        reported = message.usage_metadata
        if not reported:
            return None, None
        return reported.get("input_tokens"), reported.get("output_tokens")

    def classify(self, exc: BaseException) -> Failure:
        """The client library's exception in the service's terms."""
        return classify_http_failure(exc)
