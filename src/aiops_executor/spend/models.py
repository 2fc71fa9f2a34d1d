from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, Numeric, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from aiops_executor.core.db import Base, TimestampedRow, UTCDateTime, utcnow

MONEY = Numeric(precision=20, scale=10)


class Budget(TimestampedRow, Base):
    __tablename__ = "budgets"
    __table_args__ = (Index("ix_budgets_scope", "scope", "scope_id"),)

    scope: Mapped[str] = mapped_column(String(16), nullable=False)  # team | api_key | provider | global
    scope_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    limit_usd: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
    limit_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    period: Mapped[str] = mapped_column(String(8), nullable=False)  # day | week | month | total
    soft_limit_percent: Mapped[int] = mapped_column(Integer, nullable=False, default=80)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)


class BudgetPeriod(Base):
    """What a budget's period has spent so far; admission serializes on its budget (see ``ledger``)."""

    __tablename__ = "budget_periods"

    budget_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    spent_usd: Mapped[Decimal] = mapped_column(MONEY, nullable=False, default=Decimal(0))
    spent_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    warned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # A call was refused for want of budget: no run starts until the period ends or the limits change.
    exhausted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class BudgetHold(Base):
    """What a call in flight may still cost, held against a budget until it is counted (or expires)."""

    __tablename__ = "budget_holds"
    __table_args__ = (
        Index("ix_budget_holds_budget_period", "budget_id", "period_start"),
        Index("ix_budget_holds_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    budget_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("budgets.id", ondelete="CASCADE"), nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    usd: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ModelCall(Base):
    """One successful model call as its provider reported it (None: not reported, or the model has no price)."""

    __tablename__ = "model_calls"
    __table_args__ = (
        Index("ix_model_calls_created_at", "created_at"),
        Index("ix_model_calls_team_created", "team_id", "created_at"),
        Index("ix_model_calls_api_key_created", "api_key_id", "created_at"),
        Index("ix_model_calls_provider_created", "provider_id", "created_at"),
        Index("ix_model_calls_execution", "execution_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    execution_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    team_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    provider_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    provider_name: Mapped[str] = mapped_column(String(100), nullable=False)
    model_id: Mapped[str] = mapped_column(String(200), nullable=False)
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    input_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    output_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost: Mapped[Decimal | None] = mapped_column(MONEY, nullable=True)
