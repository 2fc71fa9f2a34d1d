"""OpenAI's own API (api.openai.com unless the endpoint names another base URL)."""

from __future__ import annotations

from typing import ClassVar

from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter
from aiops_executor.llm.runtime.config import EndpointConfig

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIAdapter(OpenAICompatibleAdapter):
    type: ClassVar[str] = "openai"
    requires_base_url: ClassVar[bool] = False
    max_tokens_in_body: ClassVar[bool] = False

    def base_url(self, endpoint: EndpointConfig | None) -> str | None:
        return super().base_url(endpoint) or OPENAI_DEFAULT_BASE_URL
