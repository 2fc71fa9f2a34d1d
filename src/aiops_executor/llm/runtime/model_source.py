"""The engine's ``ModelSource`` backed by the stored LLM configuration.

Each model reference is resolved once per run and its configuration kept for the whole run (a snapshot:
edits made while the run goes on apply to the next run). Each successful call's usage is reported to the
engine, which attributes it to the node team or supervisor that made it.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.engine.models import Usage, report_usage
from aiops_executor.llm.runtime.calls import CallRecord
from aiops_executor.llm.runtime.config import ModelBinding
from aiops_executor.llm.runtime.service import ModelRuntime


class RuntimeModelSource:
    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self._bindings: dict[tuple[str, str], ModelBinding] = {}
        self._total = Usage()

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
        if record.outcome != "success":
            return  # a failed attempt returned nothing that could be billed
        usage = Usage(record.input_tokens, record.output_tokens, record.cost)
        self._total = self._total + usage
        report_usage(usage)

    def usage(self) -> Usage:
        """Everything this source's models used, whichever run or step made the calls."""
        return self._total
