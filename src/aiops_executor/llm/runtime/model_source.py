"""The engine's ``ModelSource`` backed by the stored LLM configuration.

Each model reference is resolved once per run and its configuration kept for the whole run (a snapshot:
edits made while the run goes on apply to the next run). Usage and cost are summed per run.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.engine.models import Usage
from aiops_executor.llm.runtime.config import ModelBinding
from aiops_executor.llm.runtime.failover import CallRecord
from aiops_executor.llm.runtime.service import ModelRuntime


class RuntimeModelSource:
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self._bindings: dict[tuple[str, str], ModelBinding] = {}
        self._input_tokens = 0
        self._output_tokens = 0
        self._cost = Decimal(0)

    async def binding(self, provider: str, model_id: str) -> ModelBinding:
        key = (provider, model_id)
        binding = self._bindings.get(key)
        if binding is None:
            async with self.runtime.context.database.sessionmaker() as session:
                binding = await self.runtime.load_binding(session, provider, model_id)
            self._bindings[key] = binding
        return binding

    async def snapshot(self, references: set[tuple[str, str]]) -> None:
        """Loads every model a team uses up front, so configuration problems show before the run starts."""
        for provider, model_id in sorted(references):
            await self.binding(provider, model_id)

    async def chat_model(self, provider: str, model_id: str, overrides: dict[str, Any]) -> BaseChatModel:
        return self.runtime.chat_model(await self.binding(provider, model_id), overrides, also_record=self._count)

    async def _count(self, record: CallRecord) -> None:
        self._input_tokens += record.input_tokens
        self._output_tokens += record.output_tokens
        self._cost += record.cost

    def usage(self) -> Usage:
        return Usage(self._input_tokens, self._output_tokens, self._cost)
