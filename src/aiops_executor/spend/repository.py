"""The spend tables' queries. Every function works in the session it is given, inside the caller's transaction,
and never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, delete, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.spend.models import Budget, BudgetHold, BudgetPeriod, ModelCall
from aiops_executor.spend.periods import period_bounds


@dataclass(frozen=True)
class BudgetRule:
    """A budget as admission needs it (a snapshot of its row, cached between changes)."""

    id: uuid.UUID
    scope: str
    scope_id: uuid.UUID | None
    limit_usd: Decimal | None
    limit_tokens: int | None
    period: str
    soft_limit_percent: int

    @classmethod
    def of(cls, row: Budget) -> BudgetRule:
        return cls(
            row.id,
            row.scope,
            row.scope_id,
            row.limit_usd,
            row.limit_tokens,
            row.period,
            row.soft_limit_percent,
        )

    def applies(
        self, *, team_id: uuid.UUID | None, api_key_id: uuid.UUID | None, provider_id: uuid.UUID | None
    ) -> bool:
        match self.scope:
            case "global":
                return True
            case "team":
                return team_id is not None and self.scope_id == team_id
            case "api_key":
                return api_key_id is not None and self.scope_id == api_key_id
            case "provider":
                return provider_id is not None and self.scope_id == provider_id
        return False

    def over(self, usd: Decimal, tokens: int) -> bool:
        """Whether spend of ``usd`` and ``tokens`` is past either hard limit."""
        return (self.limit_usd is not None and usd > self.limit_usd) or (
            self.limit_tokens is not None and tokens > self.limit_tokens
        )

    def spent(self, usd: Decimal, tokens: int) -> bool:
        """Whether nothing is left: a limit reached (a start is refused)."""
        return (self.limit_usd is not None and usd >= self.limit_usd) or (
            self.limit_tokens is not None and tokens >= self.limit_tokens
        )

    def past_soft_limit(self, usd: Decimal, tokens: int) -> bool:
        share = Decimal(self.soft_limit_percent) / 100
        return (self.limit_usd is not None and usd >= self.limit_usd * share) or (
            self.limit_tokens is not None and tokens >= self.limit_tokens * share
        )


@dataclass(frozen=True)
class Spend:
    usd: Decimal
    tokens: int
    period_start: datetime
    period_end: datetime | None
    exhausted: bool = False


async def rules(session: AsyncSession) -> list[BudgetRule]:
    return [BudgetRule.of(row) for row in (await session.scalars(select(Budget).order_by(Budget.id))).all()]


def _in_scope(rule: BudgetRule) -> ColumnElement[bool]:
    match rule.scope:
        case "team":
            return ModelCall.team_id == rule.scope_id
        case "api_key":
            return ModelCall.api_key_id == rule.scope_id
        case "provider":
            return ModelCall.provider_id == rule.scope_id
    return true()


async def recorded_spend(session: AsyncSession, rule: BudgetRule, since: datetime) -> tuple[Decimal, int]:
    """What the recorded calls in the budget's scope spent since ``since`` (USD of priced calls, every token)."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(ModelCall.cost), 0),
                func.coalesce(func.sum(ModelCall.input_tokens), 0)
                + func.coalesce(func.sum(ModelCall.output_tokens), 0),
            ).where(_in_scope(rule), ModelCall.created_at >= since)
        )
    ).one()
    return Decimal(str(row[0])), int(row[1] or 0)


async def period_row(session: AsyncSession, rule: BudgetRule, start: datetime) -> BudgetPeriod:
    """The budget's counter for the period starting at ``start``, made (from the calls recorded so far in it)
    when the period has none yet. The caller holds the budget's lock."""
    row = await session.get(BudgetPeriod, (rule.id, start))
    if row is None:
        usd, tokens = await recorded_spend(session, rule, start)
        row = BudgetPeriod(
            budget_id=rule.id, period_start=start, spent_usd=usd, spent_tokens=tokens, warned=False, exhausted=False
        )
        session.add(row)
        await session.flush()
    return row


async def current_spend(session: AsyncSession, rule: BudgetRule, now: datetime) -> Spend:
    """What the budget's current period has spent (read only: a period nobody has spent in yet has no row)."""
    start, end = period_bounds(rule.period, now)
    row = await session.get(BudgetPeriod, (rule.id, start))
    if row is not None:
        return Spend(row.spent_usd, row.spent_tokens, start, end, row.exhausted)
    usd, tokens = await recorded_spend(session, rule, start)
    return Spend(usd, tokens, start, end)


async def held(session: AsyncSession, budget_id: uuid.UUID, start: datetime, now: datetime) -> tuple[Decimal, int]:
    """What the calls in flight hold against the budget's period (holds past their expiry no longer count)."""
    row = (
        await session.execute(
            select(func.coalesce(func.sum(BudgetHold.usd), 0), func.coalesce(func.sum(BudgetHold.tokens), 0)).where(
                BudgetHold.budget_id == budget_id, BudgetHold.period_start == start, BudgetHold.expires_at > now
            )
        )
    ).one()
    return Decimal(str(row[0])), int(row[1])


async def count(
    session: AsyncSession, budget_id: uuid.UUID, start: datetime, usd: Decimal, tokens: int
) -> BudgetPeriod | None:
    """Adds a call's spend to the period's counter (None when the period has no counter: its first admission
    will count this call from the recorded calls)."""
    await session.execute(
        update(BudgetPeriod)
        .where(BudgetPeriod.budget_id == budget_id, BudgetPeriod.period_start == start)
        .values(spent_usd=BudgetPeriod.spent_usd + usd, spent_tokens=BudgetPeriod.spent_tokens + tokens)
        .execution_options(synchronize_session=False)
    )
    row = await session.get(BudgetPeriod, (budget_id, start), populate_existing=True)
    return row


async def mark_exhausted(session: AsyncSession, rule: BudgetRule, start: datetime) -> None:
    (await period_row(session, rule, start)).exhausted = True


async def reopen(session: AsyncSession, budget_id: uuid.UUID) -> None:
    """A budget's limits changed: a period a refused call closed may start runs again (if they fit)."""
    await session.execute(update(BudgetPeriod).where(BudgetPeriod.budget_id == budget_id).values(exhausted=False))


async def release(session: AsyncSession, hold_ids: list[uuid.UUID]) -> None:
    if hold_ids:
        await session.execute(delete(BudgetHold).where(BudgetHold.id.in_(hold_ids)))


async def purge_expired_holds(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(delete(BudgetHold).where(BudgetHold.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)
