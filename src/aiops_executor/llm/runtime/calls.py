"""What one attempt at a provider cost: its record (usage, quota, metrics) and its price; whose call it was, and
the gate every call passes (budgets)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from aiops_executor.llm.runtime.config import ModelConfig
from aiops_executor.llm.runtime.estimate import CallSize


@dataclass(frozen=True)
class CallRecord:
    """One attempt at a provider, for usage, quota and metrics."""

    model: ModelConfig
    endpoint_id: uuid.UUID | None
    credential_id: uuid.UUID | None
    outcome: str  # "success" or a FailureKind value
    latency_ms: float
    # None: the provider did not report the count, or the model has no price (unknown, not free).
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cost: Decimal | None = Decimal(0)


CallSink = Callable[[CallRecord], Awaitable[None]]


def cost_of(model: ModelConfig, input_tokens: int | None, output_tokens: int | None) -> Decimal | None:
    """Prices are per 1K tokens; unknown (None) when a count or a price is unknown."""
    if input_tokens is None or output_tokens is None or model.input_price is None or model.output_price is None:
        return None
    return model.input_price * input_tokens / 1000 + model.output_price * output_tokens / 1000


@dataclass(frozen=True)
class CallWarning:
    """A budget whose soft limit a call's spend crossed (announced once per period)."""

    budget_id: uuid.UUID
    spent_usd: Decimal
    limit_usd: Decimal | None
    spent_tokens: int
    limit_tokens: int | None


@dataclass(frozen=True)
class CallAttribution:
    """Whose call it is: the run (and its team and the API key that started it) a call is made for, and who in
    it hears a budget's soft limit crossed or its hard limit reached. Empty for calls outside runs (a model
    test): only budgets over a provider or everything apply to those."""

    execution_id: uuid.UUID | None = None
    team_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    on_warning: Callable[[CallWarning], None] | None = None
    on_refused: Callable[[Exception], None] | None = None


@runtime_checkable
class CallGate(Protocol):
    """Admits each model call before it is made and counts it once it is done (budgets and the ledger of
    calls; see ``spend.ledger``). ``admit`` raises when the call must not be made; its ticket goes to
    ``settle`` with the successful attempt's record, or None when no attempt succeeded."""

    async def admit(self, attribution: CallAttribution, model: ModelConfig, size: CallSize) -> object: ...

    async def settle(self, ticket: object, record: CallRecord | None) -> None: ...
