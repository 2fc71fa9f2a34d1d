"""Baidu AI Cloud Qianfan (ERNIE models) through its OpenAI-compatible v2 API."""

from __future__ import annotations

from typing import ClassVar

from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig

QIANFAN_BASE_URL = "https://qianfan.baidubce.com/v2"


class QianfanAdapter(OpenAICompatibleAdapter):
    type: ClassVar[str] = "baidu_qianfan"
    requires_base_url: ClassVar[bool] = False

    def base_url(self, endpoint: EndpointConfig | None) -> str | None:
        return super().base_url(endpoint) or QIANFAN_BASE_URL

    def default_headers(self, secrets: DecryptedSecrets | None) -> dict[str, str]:
        # Qianfan v2 scopes a bearer key to an application with the appid header (stored as the secret key).
        return {"appid": secrets.secret_key} if secrets and secrets.secret_key else {}
