"""Ollama: chat through its OpenAI-compatible API under ``/v1``, the catalogue from its native ``/api/tags``."""

from __future__ import annotations

from typing import ClassVar

import httpx

from aiops_executor.core import egress
from aiops_executor.llm.adapters.base import RemoteModel, http_timeout, require_endpoint
from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig

OLLAMA_PLACEHOLDER_KEY = "ollama"  # Ollama ignores the key, but the OpenAI client insists on one.


class OllamaAdapter(OpenAICompatibleAdapter):
    type: ClassVar[str] = "ollama"
    needs_credential: ClassVar[bool] = False

    def base_url(self, endpoint: EndpointConfig | None) -> str | None:
        configured = super().base_url(endpoint)
        if configured and not configured.endswith("/v1"):
            return configured + "/v1"
        return configured

    def api_key(self, secrets: DecryptedSecrets | None) -> str:
        return secrets.api_key if secrets and secrets.api_key else OLLAMA_PLACEHOLDER_KEY

    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        endpoint = require_endpoint(endpoint, self.type)
        base = (endpoint.base_url or "").rstrip("/")
        base = base.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {secrets.api_key}"} if secrets else {}
        transport = egress.async_transport(httpx, credential_origin=egress.credential_origin_of(base))
        async with httpx.AsyncClient(timeout=http_timeout(endpoint), transport=transport, trust_env=False) as client:
            response = await client.get(f"{base}/api/tags", headers=headers)
            response.raise_for_status()
            payload = response.json()
        return [RemoteModel(str(m.get("name") or m.get("model"))) for m in payload.get("models", [])]
