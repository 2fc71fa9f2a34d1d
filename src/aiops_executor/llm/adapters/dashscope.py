"""Alibaba Cloud Model Studio (DashScope, Qwen models) through its OpenAI-compatible mode."""

from __future__ import annotations

from typing import ClassVar

from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter
from aiops_executor.llm.runtime.config import EndpointConfig

DASHSCOPE_BASE_URLS = {
    "cn": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "intl": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
}
# DashScope's international deployment serves these regions; everything else goes to mainland China.
DASHSCOPE_INTL_REGIONS = frozenset({"intl", "ap-southeast-1", "singapore", "sg"})


def dashscope_base_url(region: str | None) -> str:
    key = "intl" if (region or "").lower() in DASHSCOPE_INTL_REGIONS else "cn"
    return DASHSCOPE_BASE_URLS[key]


class DashScopeAdapter(OpenAICompatibleAdapter):
    type: ClassVar[str] = "aliyun_dashscope"
    requires_base_url: ClassVar[bool] = False

    def base_url(self, endpoint: EndpointConfig | None) -> str | None:
        return super().base_url(endpoint) or dashscope_base_url(endpoint.region if endpoint else None)
