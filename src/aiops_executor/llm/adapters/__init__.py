"""Provider adapters, one module per provider family; this registry is the only list of provider types.

Adding a vendor: one module with a ``ProviderAdapter`` subclass, and one line in ``_ADAPTERS``.
"""

from __future__ import annotations

from aiops_executor.llm.adapters.anthropic import AnthropicAdapter
from aiops_executor.llm.adapters.azure_openai import AzureOpenAIAdapter
from aiops_executor.llm.adapters.base import ClientConfigurationError, ProviderAdapter
from aiops_executor.llm.adapters.bedrock import BedrockAdapter
from aiops_executor.llm.adapters.dashscope import DashScopeAdapter
from aiops_executor.llm.adapters.ollama import OllamaAdapter
from aiops_executor.llm.adapters.openai import OpenAIAdapter
from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter
from aiops_executor.llm.adapters.qianfan import QianfanAdapter
from aiops_executor.llm.adapters.simulator import SimulatorAdapter
from aiops_executor.llm.adapters.vllm import VLLMAdapter

_ADAPTERS: dict[str, ProviderAdapter] = {
    adapter.type: adapter
    for adapter in (
        OpenAIAdapter(),
        AzureOpenAIAdapter(),
        AnthropicAdapter(),
        BedrockAdapter(),
        DashScopeAdapter(),
        QianfanAdapter(),
        OllamaAdapter(),
        VLLMAdapter(),
        OpenAICompatibleAdapter(),
        SimulatorAdapter(),
    )
}

PROVIDER_TYPES: tuple[str, ...] = tuple(_ADAPTERS)


def adapter_for(provider_type: str) -> ProviderAdapter:
    adapter = _ADAPTERS.get(provider_type)
    if adapter is None:
        raise ClientConfigurationError(f"unknown provider type {provider_type!r}")
    return adapter


__all__ = ["PROVIDER_TYPES", "ClientConfigurationError", "ProviderAdapter", "adapter_for"]
