"""Budgets (kept, read with what their period has spent, checked before a run starts) and usage reports from
the ledger of model calls."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Date, case, cast, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.auth.models import ApiKey
from aiops_executor.core.cache import ConfigCache
from aiops_executor.core.db import utcnow
from aiops_executor.core.errors import NotFoundError, ValidationFailed
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.llm.models import Provider
from aiops_executor.spend import repository
from aiops_executor.spend.ledger import BudgetExceeded, SpendLedger
from aiops_executor.spend.models import Budget, ModelCall
from aiops_executor.spend.periods import Period
from aiops_executor.spend.repository import BudgetRule
from aiops_executor.spend.schemas import (
    BudgetCreate,
    BudgetRead,
    BudgetScope,
    BudgetUpdate,
    UsageGroup,
    UsageRow,
)
from aiops_executor.teams.models import Team

RESOURCE = "budget"
SCOPE_MODELS: dict[BudgetScope, type[Team] | type[ApiKey] | type[Provider]] = {
    BudgetScope.team: Team,
    BudgetScope.api_key: ApiKey,
    BudgetScope.provider: Provider,
}


async def _read(session: AsyncSession, row: Budget, now: datetime) -> BudgetRead:
    rule = BudgetRule.of(row)
    spend = await repository.current_spend(session, rule, now)
    return BudgetRead(
        id=row.id,
        scope=BudgetScope(row.scope),
        scope_id=row.scope_id,
        limit_usd=None if row.limit_usd is None else float(row.limit_usd),
        limit_tokens=row.limit_tokens,
        period=Period(row.period),
        soft_limit_percent=row.soft_limit_percent,
        spent_usd=float(spend.usd),
        spent_tokens=spend.tokens,
        remaining_usd=None if row.limit_usd is None else float(max(Decimal(0), row.limit_usd - spend.usd)),
        remaining_tokens=None if row.limit_tokens is None else max(0, row.limit_tokens - spend.tokens),
        exhausted=spend.exhausted or rule.spent(spend.usd, spend.tokens),
        period_started_at=spend.period_start,
        period_ends_at=spend.period_end,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _get(session: AsyncSession, budget_id: uuid.UUID) -> Budget:
    row = await session.get(Budget, budget_id)
    if row is None:
        raise NotFoundError("budget", budget_id)
    return row


async def _check_scope(session: AsyncSession, scope: BudgetScope, scope_id: uuid.UUID | None) -> None:
    model = SCOPE_MODELS.get(scope)
    if model is not None and (scope_id is None or await session.get(model, scope_id) is None):
        raise ValidationFailed(
            f"{scope.value.replace('_', ' ')} {scope_id} does not exist",
            details={"errors": [{"path": "scope_id", "message": f"no {scope.value} with this id"}]},
        )


def _limits(body: BudgetCreate | BudgetUpdate) -> dict[str, Any]:
    return {
        "limit_usd": body.limit_usd,
        "limit_tokens": body.limit_tokens,
        "period": body.period.value,
        "soft_limit_percent": body.soft_limit_percent,
    }


def _audit(session: AsyncSession, row: Budget, action: str, actor: str) -> None:
    details = {
        "scope": row.scope,
        "scope_id": str(row.scope_id) if row.scope_id else None,
        "limit_usd": None if row.limit_usd is None else str(row.limit_usd),
        "limit_tokens": row.limit_tokens,
        "period": row.period,
        "soft_limit_percent": row.soft_limit_percent,
    }
    audit.record(session, actor=actor, action=action, resource_type=RESOURCE, resource_id=row.id, details=details)


async def _saved(session: AsyncSession, cache: ConfigCache, row: Budget, action: str, actor: str) -> BudgetRead:
    """The budget's change audited and committed; admission reads budgets afresh from then on."""
    await session.flush()
    _audit(session, row, action, actor)
    read = await _read(session, row, utcnow())
    await session.commit()
    cache.invalidate()
    return read


async def create_budget(session: AsyncSession, cache: ConfigCache, body: BudgetCreate, *, actor: str) -> BudgetRead:
    await _check_scope(session, body.scope, body.scope_id)
    row = Budget(scope=body.scope.value, scope_id=body.scope_id, created_by=actor, **_limits(body))
    session.add(row)
    return await _saved(session, cache, row, "create", actor)


async def update_budget(
    session: AsyncSession, cache: ConfigCache, budget_id: uuid.UUID, body: BudgetUpdate, *, actor: str
) -> BudgetRead:
    row = await _get(session, budget_id)
    for name, value in _limits(body).items():
        setattr(row, name, value)
    await repository.reopen(session, row.id)
    return await _saved(session, cache, row, "update", actor)


async def delete_budget(session: AsyncSession, cache: ConfigCache, budget_id: uuid.UUID, *, actor: str) -> None:
    row = await _get(session, budget_id)
    _audit(session, row, "delete", actor)
    await session.delete(row)
    await session.commit()
    cache.invalidate()


async def get_budget(session: AsyncSession, budget_id: uuid.UUID) -> BudgetRead:
    return await _read(session, await _get(session, budget_id), utcnow())


async def list_budgets(
    session: AsyncSession, page: PageParams, *, scope: BudgetScope | None = None, scope_id: uuid.UUID | None = None
) -> Page[BudgetRead]:
    stmt = select(Budget).order_by(Budget.created_at, Budget.id)
    if scope is not None:
        stmt = stmt.where(Budget.scope == scope.value)
    if scope_id is not None:
        stmt = stmt.where(Budget.scope_id == scope_id)
    rows, total = await paginate(session, stmt, page)
    now = utcnow()
    return Page.build([await _read(session, row, now) for row in rows], total, page)


async def check_start(
    session: AsyncSession,
    ledger: SpendLedger,
    *,
    team_id: uuid.UUID,
    api_key_id: uuid.UUID | None,
    provider_ids: set[uuid.UUID],
) -> None:
    """Refuses a run (``BudgetExceeded``, 429 with Retry-After) that a spent budget would stop at its first
    model call: one of its team, of the API key starting it, of a provider its models use, or the global one."""
    now = utcnow()
    applicable = await ledger.applicable(
        team_id=team_id, api_key_id=api_key_id, provider_ids=provider_ids, session=session
    )
    for rule in applicable:
        spend = await repository.current_spend(session, rule, now)
        if spend.exhausted or rule.spent(spend.usd, spend.tokens):
            ledger.metrics.budget_event(rule.scope, "exceeded")
            raise BudgetExceeded(rule, spend.usd, spend.tokens, spend.period_end, now)


def _null_aware_sum(column: Any) -> Any:
    """The sum, or null when any row's value is unknown (an unknown count is never taken as 0)."""
    return case((func.count() == func.count(column), func.sum(column)), else_=None)


def _group_key(session: AsyncSession, group_by: UsageGroup) -> Any:
    match group_by:
        case UsageGroup.team:
            return ModelCall.team_id
        case UsageGroup.api_key:
            return ModelCall.api_key_id
        case UsageGroup.provider:
            return ModelCall.provider_id
        case UsageGroup.model:
            return ModelCall.provider_name + "/" + ModelCall.model_id
    # Days in UTC: PostgreSQL's timestamptz is read in UTC; SQLite stores UTC already.
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.timezone("UTC", ModelCall.created_at), Date)
    return func.date(ModelCall.created_at)


async def usage_report(
    session: AsyncSession, *, since: datetime | None, until: datetime | None, group_by: UsageGroup
) -> list[UsageRow]:
    """Calls made in [since, until) (default: the last 30 days), grouped; input/output tokens and cost are
    null-aware sums. A row per group that has calls: bounded by the days, teams, models, providers or keys that
    made calls, whatever the range (an empty one has none)."""
    until = (until or utcnow()).astimezone(UTC)
    since = (since or until - timedelta(days=30)).astimezone(UTC)
    key = _group_key(session, group_by).label("key")
    stmt = (
        select(
            key,
            _null_aware_sum(ModelCall.input_tokens),
            _null_aware_sum(ModelCall.output_tokens),
            _null_aware_sum(ModelCall.cost),
            func.count(distinct(ModelCall.execution_id)),
            func.count(),
        )
        .where(ModelCall.created_at >= since, ModelCall.created_at < until)
        .group_by(key)
        .order_by(key)
    )
    rows = []
    for value, input_tokens, output_tokens, cost, runs, calls in (await session.execute(stmt)).all():
        rows.append(
            UsageRow(
                key=None if value is None else str(value),
                input_tokens=None if input_tokens is None else int(input_tokens),
                output_tokens=None if output_tokens is None else int(output_tokens),
                cost=None if cost is None else float(cost),
                runs=int(runs),
                calls=int(calls),
            )
        )
    return rows
