"""What one attempt at a provider cost: its record (usage, quota, metrics) and its price."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from aiops_executor.llm.runtime.config import ModelConfig


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
