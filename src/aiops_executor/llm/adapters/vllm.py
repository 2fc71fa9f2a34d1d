"""vLLM's OpenAI-compatible server (``vllm serve``); it enforces response_format JSON Schemas with guided decoding."""

from __future__ import annotations

from typing import ClassVar

from aiops_executor.llm.adapters.openai_compatible import OpenAICompatibleAdapter


class VLLMAdapter(OpenAICompatibleAdapter):
    type: ClassVar[str] = "vllm"
