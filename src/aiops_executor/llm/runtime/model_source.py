"""The engine's ``ModelSource`` backed by the stored LLM configuration.

Each model reference is resolved once per run and its configuration kept for the whole run (a snapshot:
edits made while the run goes on apply to the next run). Each successful call's usage is reported to the
engine, which attributes it to the node team or supervisor that made it. Calls are attributed to the run (its
team, the API key that started it) for budgets: a budget's soft limit crossed becomes the run's
``budget_warning`` event, and a spent budget halts the run (``halt``).
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.core.errors import AppError
from aiops_executor.engine.events import EventType, PendingEvent, announce
from aiops_executor.engine.models import RunHalt, Usage, report_usage
from aiops_executor.llm.runtime.calls import CallAttribution, CallRecord, CallWarning
from aiops_executor.llm.runtime.config import ModelBinding
from aiops_executor.llm.runtime.service import ModelRuntime


class RuntimeModelSource:
    def __init__(
        self,
        runtime: ModelRuntime,
        *,
        execution_id: uuid.UUID | None = None,
        team_id: uuid.UUID | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> None:
        self.runtime = runtime
        self._bindings: dict[tuple[str, str], ModelBinding] = {}
        self._total = Usage()
        self._halt: RunHalt | None = None
        self.attribution = CallAttribution(
            execution_id=execution_id,
            team_id=team_id,
            api_key_id=api_key_id,
            on_warning=self._warn,
            on_refused=self._refused,
        )

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
        return self.runtime.chat_model(
            await self.binding(provider, model_id), overrides, also_record=self._count, attribution=self.attribution
        )

    async def _count(self, record: CallRecord) -> None:
        if record.outcome != "success":
            return  # a failed attempt returned nothing that could be billed
        usage = Usage(record.input_tokens, record.output_tokens, record.cost)
        self._total = self._total + usage
        report_usage(usage)

    def halt(self) -> RunHalt | None:
        return self._halt

    def _refused(self, exc: Exception) -> None:
        if self._halt is None:
            code = exc.error_code if isinstance(exc, AppError) else "EXECUTION_FAILED"
            details = dict(exc.details) if isinstance(exc, AppError) else {}
            self._halt = RunHalt(code, getattr(exc, "message", str(exc)), details)

    @staticmethod
    def _warn(warning: CallWarning) -> None:
        announce(
            PendingEvent(
                EventType.budget_warning,
                data={
                    "budget_id": str(warning.budget_id),
                    "spent_usd": float(warning.spent_usd),
                    "limit_usd": None if warning.limit_usd is None else float(warning.limit_usd),
                    "spent_tokens": warning.spent_tokens,
                    "limit_tokens": warning.limit_tokens,
                },
            )
        )

    def usage(self) -> Usage:
        """Everything this source's models used, whichever run or step made the calls."""
        return self._total
