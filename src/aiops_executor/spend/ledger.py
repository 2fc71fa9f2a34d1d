"""The gate every model call passes (the model runtime's ``CallGate``): budgets admit it before it is made, and
once it is done it is written to the ledger of calls and counted against them.

Exact across processes: admission and counting take the budget's lock (a PostgreSQL advisory lock; SQLite's
single write lock), and a call is admitted only if what the period has spent, plus what the calls in flight
hold, plus the most this call can cost (``llm.runtime.estimate``) stays within the limit. So two runs cannot
both spend the last dollar; a budget is overspent only by a call whose provider reports more than its bound
(an output beyond ``AIOPS_BUDGET_DEFAULT_OUTPUT_TOKENS`` when neither the call nor the model sets a limit).

A call that does not fit even with nothing in flight is refused, and the period is closed: no run starts in it
any more. A call that fits but for what the calls in flight hold waits for them to be counted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.audit import service as audit
from aiops_executor.core.cache import ConfigCache
from aiops_executor.core.db import serialize_transaction, utcnow
from aiops_executor.core.errors import AppError
from aiops_executor.core.metrics import Metrics
from aiops_executor.llm.runtime.calls import CallAttribution, CallRecord, CallWarning
from aiops_executor.llm.runtime.config import ModelConfig
from aiops_executor.llm.runtime.estimate import CallSize
from aiops_executor.spend import repository
from aiops_executor.spend.models import BudgetHold
from aiops_executor.spend.periods import period_bounds
from aiops_executor.spend.repository import BudgetRule
from aiops_executor.spend.writer import MODEL_CALLS, BatchWriter

logger = structlog.get_logger(__name__)

CACHE_KEY = ("spend", "budgets")
SYSTEM_ACTOR = "system:budgets"


def money(value: Decimal | None) -> str:
    return "unknown" if value is None else f"${value.quantize(Decimal('0.000001'))}"


def describe(rule: BudgetRule) -> str:
    scope = "global" if rule.scope == "global" else f"{rule.scope.replace('_', ' ')} {rule.scope_id}"
    return f"the {rule.period} budget {rule.id} ({scope})"


class BudgetExceeded(AppError):
    """A budget has nothing left for a run to start, or for a call to be made."""

    status_code = 429
    error_code = "BUDGET_EXCEEDED"

    def __init__(
        self,
        rule: BudgetRule,
        spent_usd: Decimal,
        spent_tokens: int,
        resets_at: datetime | None,
        now: datetime,
        *,
        needed: tuple[Decimal, int] | None = None,
    ) -> None:
        limits = []
        if rule.limit_usd is not None:
            limits.append(f"{money(spent_usd)} of {money(rule.limit_usd)} spent")
        if rule.limit_tokens is not None:
            limits.append(f"{spent_tokens} of {rule.limit_tokens} tokens used")
        message = f"{describe(rule)} is exhausted: {', '.join(limits)}"
        if needed is not None and not rule.spent(spent_usd, spent_tokens):
            message += (
                f"; the next model call may cost up to {money(needed[0])} ({needed[1]} tokens), more than is left"
            )
        message += f"; it resets at {resets_at.isoformat()}" if resets_at else "; it does not reset (period total)"
        retry_after = max(1, int((resets_at - now).total_seconds()) + 1) if resets_at else None
        super().__init__(
            message,
            details={
                "budget_id": str(rule.id),
                "scope": rule.scope,
                "scope_id": str(rule.scope_id) if rule.scope_id else None,
                "period": rule.period,
                "limit_usd": None if rule.limit_usd is None else float(rule.limit_usd),
                "limit_tokens": rule.limit_tokens,
                "spent_usd": float(spent_usd),
                "spent_tokens": spent_tokens,
                "resets_at": resets_at.isoformat() if resets_at else None,
            },
            headers={"Retry-After": str(retry_after)} if retry_after else None,
        )


@dataclass(frozen=True)
class Ticket:
    """An admitted call: whose it is, and what it holds against which budget period (budget, period, hold)."""

    attribution: CallAttribution
    holds: tuple[tuple[BudgetRule, datetime, uuid.UUID], ...]


class SpendLedger:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        cache: ConfigCache,
        metrics: Metrics,
        *,
        hold_seconds: float,
        wait_seconds: float = 0.1,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.cache = cache
        self.metrics = metrics
        self.hold = timedelta(seconds=hold_seconds)
        # How often a call that waits for the calls in flight asks again.
        self.wait_seconds = wait_seconds
        self.clock = clock
        self.writer = BatchWriter(sessionmaker)
        self._loading: asyncio.Task[list[BudgetRule]] | None = None

    async def rules(self, session: AsyncSession | None = None) -> list[BudgetRule]:
        """Every budget, cached until one changes (across processes with Redis; within the cache's TTL without).
        Read in ``session`` when the caller has one open (on SQLite, a second session would wait for the first's
        write lock)."""

        async def load() -> list[BudgetRule]:
            if session is not None:
                return await repository.rules(session)
            # One read for every call that finds the cache empty at once (a run's first calls all do): a session
            # each would take as many database connections.
            if self._loading is None or self._loading.done():
                self._loading = asyncio.create_task(self._read_rules(), name="budget-rules")
            return await asyncio.shield(self._loading)

        return await self.cache.get_or_load(CACHE_KEY, load)

    async def _read_rules(self) -> list[BudgetRule]:
        async with self.sessionmaker() as session:
            return await repository.rules(session)

    async def applicable(
        self,
        *,
        team_id: uuid.UUID | None,
        api_key_id: uuid.UUID | None,
        provider_ids: set[uuid.UUID],
        session: AsyncSession | None = None,
    ) -> list[BudgetRule]:
        return [
            rule
            for rule in await self.rules(session)
            if rule.applies(team_id=team_id, api_key_id=api_key_id, provider_id=None)
            or any(rule.applies(team_id=None, api_key_id=None, provider_id=p) for p in provider_ids)
        ]

    async def admit(self, attribution: CallAttribution, model: ModelConfig, size: CallSize) -> Ticket:
        """Holds what the call may cost against every budget over it, or refuses it (``BudgetExceeded``) when a
        budget cannot cover it even once the calls in flight have been counted. While it would fit but for what
        those calls hold, it waits for them (they usually cost far less than they hold); cancellable."""
        rules = await self.applicable(
            team_id=attribution.team_id, api_key_id=attribution.api_key_id, provider_ids={model.provider_id}
        )
        if not rules:
            return Ticket(attribution, ())
        usd = size.cost_bound(model) or Decimal(0)
        tokens = size.tokens_bound
        while True:
            ticket = await self._try_admit(attribution, model, rules, usd, tokens)
            if ticket is not None:
                return ticket
            await asyncio.sleep(self.wait_seconds)

    async def _try_admit(
        self, attribution: CallAttribution, model: ModelConfig, rules: list[BudgetRule], usd: Decimal, tokens: int
    ) -> Ticket | None:
        """The ticket; None when the call must wait for calls in flight."""
        now = self.clock()
        holds: list[tuple[BudgetRule, datetime, uuid.UUID]] = []
        async with self.sessionmaker() as session:
            for rule in rules:  # in id order: two admissions never wait on each other's locks crosswise
                await serialize_transaction(session, f"budget:{rule.id}")
                start, end = period_bounds(rule.period, now)
                row = await repository.period_row(session, rule, start)
                if (
                    row.exhausted
                    or rule.spent(row.spent_usd, row.spent_tokens)
                    or rule.over(row.spent_usd + usd, row.spent_tokens + tokens)
                ):
                    refusal = BudgetExceeded(rule, row.spent_usd, row.spent_tokens, end, now, needed=(usd, tokens))
                    await session.rollback()  # the holds taken for other budgets go too
                    await self._close_period(rule, start)
                    self.metrics.budget_event(rule.scope, "exceeded")
                    logger.warning("model call refused: budget exhausted", budget_id=str(rule.id), model=model.model_id)
                    if attribution.on_refused is not None:
                        attribution.on_refused(refusal)
                    raise refusal
                held_usd, held_tokens = await repository.held(session, rule.id, start, now)
                if rule.over(row.spent_usd + held_usd + usd, row.spent_tokens + held_tokens + tokens):
                    await session.rollback()
                    return None
                hold = BudgetHold(
                    id=uuid.uuid4(),
                    budget_id=rule.id,
                    period_start=start,
                    usd=usd,
                    tokens=tokens,
                    expires_at=now + self.hold,
                )
                session.add(hold)
                holds.append((rule, start, hold.id))
            await session.commit()
        return Ticket(attribution, tuple(holds))

    async def _close_period(self, rule: BudgetRule, start: datetime) -> None:
        """A call was refused: no run starts in this period any more (until the budget's limits change)."""
        async with self.sessionmaker() as session:
            await serialize_transaction(session, f"budget:{rule.id}")
            await repository.mark_exhausted(session, rule, start)
            await session.commit()

    async def settle(self, ticket: object, record: CallRecord | None) -> None:
        assert isinstance(ticket, Ticket)
        succeeded = record is not None and record.outcome == "success"
        if not ticket.holds:
            if record is not None and succeeded:
                await self.writer.write(self._ledger_row(ticket.attribution, record))
            return
        warnings: list[tuple[BudgetRule, CallWarning]] = []
        async with self.sessionmaker() as session:
            usd, tokens = Decimal(0), 0
            if record is not None and succeeded:
                await session.execute(insert(MODEL_CALLS), [self._ledger_row(ticket.attribution, record)])
                usd = record.cost or Decimal(0)
                tokens = (record.input_tokens or 0) + (record.output_tokens or 0)
            for rule, start, hold_id in ticket.holds:
                await serialize_transaction(session, f"budget:{rule.id}")
                await repository.release(session, [hold_id])
                if not succeeded:
                    continue
                row = await repository.count(session, rule.id, start, usd, tokens)
                if row is not None and not row.warned and rule.past_soft_limit(row.spent_usd, row.spent_tokens):
                    row.warned = True
                    warning = CallWarning(rule.id, row.spent_usd, rule.limit_usd, row.spent_tokens, rule.limit_tokens)
                    warnings.append((rule, warning))
                    audit.record(
                        session,
                        actor=SYSTEM_ACTOR,
                        action="soft_limit",
                        resource_type="budget",
                        resource_id=rule.id,
                        details={
                            "period_start": start.isoformat(),
                            "soft_limit_percent": rule.soft_limit_percent,
                            "spent_usd": float(row.spent_usd),
                            "limit_usd": None if rule.limit_usd is None else float(rule.limit_usd),
                            "spent_tokens": row.spent_tokens,
                            "limit_tokens": rule.limit_tokens,
                            "execution_id": str(ticket.attribution.execution_id)
                            if ticket.attribution.execution_id
                            else None,
                        },
                    )
            await session.commit()
        for rule, warning in warnings:
            self.metrics.budget_event(rule.scope, "warning")
            logger.warning("budget crossed its soft limit", budget_id=str(rule.id), spent_usd=str(warning.spent_usd))
            if ticket.attribution.on_warning is not None:
                ticket.attribution.on_warning(warning)

    def _ledger_row(self, attribution: CallAttribution, record: CallRecord) -> dict[str, Any]:
        model = record.model
        return {
            "id": uuid.uuid4(),
            "created_at": self.clock(),
            "execution_id": attribution.execution_id,
            "team_id": attribution.team_id,
            "api_key_id": attribution.api_key_id,
            "provider_id": model.provider_id,
            "provider_name": model.provider_name,
            "model_id": model.model_id,
            "endpoint_id": record.endpoint_id,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cost": record.cost,
        }
