from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiops_executor.spend.periods import Period


class BudgetScope(StrEnum):
    team = "team"
    api_key = "api_key"
    provider = "provider"
    global_ = "global"


class UsageGroup(StrEnum):
    team = "team"
    model = "model"
    provider = "provider"
    api_key = "api_key"
    day = "day"


# Far above any real budget; keeps amounts within the stored precision (20 digits, 10 after the point).
MAX_USD = Decimal("1000000000")
LimitUsd = Annotated[Decimal, Field(gt=0, le=MAX_USD, max_digits=20, decimal_places=10)]
LimitTokens = Annotated[int, Field(ge=1, le=10**15)]
SoftPercent = Annotated[int, Field(ge=1, le=100)]


class BudgetFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit_usd: LimitUsd | None = Field(default=None, description="hard limit in USD over the period's priced calls")
    limit_tokens: LimitTokens | None = Field(
        default=None, description="hard limit in tokens (input + output) over every call, priced or not"
    )
    period: Period = Field(description="calendar day, ISO week (from Monday) or month in UTC; total never resets")
    soft_limit_percent: SoftPercent = Field(default=80, description="a budget_warning once spend reaches it")

    @model_validator(mode="after")
    def _one_limit(self) -> Self:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd, limit_tokens or both")
        return self


class BudgetCreate(BudgetFields):
    scope: BudgetScope
    scope_id: uuid.UUID | None = Field(default=None, description="the team, API key or provider; none for global")

    @model_validator(mode="after")
    def _scope_id(self) -> Self:
        if self.scope is BudgetScope.global_ and self.scope_id is not None:
            raise ValueError("a global budget has no scope_id")
        if self.scope is not BudgetScope.global_ and self.scope_id is None:
            raise ValueError(f"a {self.scope.value} budget needs the scope_id of its {self.scope.value}")
        return self


class BudgetUpdate(BudgetFields):
    """The limits, period and soft limit (a budget's scope stays what it was created for)."""


class BudgetRead(BaseModel):
    id: uuid.UUID
    scope: BudgetScope
    scope_id: uuid.UUID | None
    limit_usd: float | None
    limit_tokens: int | None
    period: Period
    soft_limit_percent: int
    spent_usd: float = Field(description="what the current period's priced calls cost, USD")
    spent_tokens: int = Field(description="the current period's tokens, input and output")
    remaining_usd: float | None = Field(description="limit_usd less spent_usd, never below 0; null: no USD limit")
    remaining_tokens: int | None
    exhausted: bool = Field(
        description="nothing left: a limit reached, or a model call refused because it would not fit in what "
        "is left; no run starts until the period ends or the limits change"
    )
    period_started_at: datetime
    period_ends_at: datetime | None = Field(description="when the budget resets; null for total")
    created_by: str
    created_at: datetime
    updated_at: datetime


class UsageRow(BaseModel):
    key: str | None = Field(
        description="the team, provider or API key id, 'provider/model', or the UTC day (YYYY-MM-DD); null for "
        "calls made outside runs (grouped by team) or without an API key (grouped by api_key)"
    )
    input_tokens: int | None = Field(description="null when a provider did not report a call's count")
    output_tokens: int | None
    cost: float | None = Field(description="USD; null when a call's price or count is unknown")
    runs: int = Field(description="distinct executions whose calls are in the row")
    calls: int
