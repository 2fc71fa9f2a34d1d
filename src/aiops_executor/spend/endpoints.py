from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from aiops_executor.auth.dependencies import AdminDep, OperatorDep
from aiops_executor.core.deps import ContextDep, PageQuery, SessionDep
from aiops_executor.core.json_types import QueryDatetime
from aiops_executor.core.openapi import errors
from aiops_executor.core.pagination import Page
from aiops_executor.spend import service
from aiops_executor.spend.schemas import BudgetCreate, BudgetRead, BudgetScope, BudgetUpdate, UsageGroup, UsageRow

router = APIRouter(tags=["spend"])

SPEND_DESCRIPTION = (
    "Spend is the sum of the recorded costs of the period's model calls in the budget's scope (USD, from the "
    "models' prices); `limit_tokens` caps their tokens, priced or not. A run that a spent budget would stop is "
    "refused at start (429 `BUDGET_EXCEEDED`, `Retry-After`); a running run whose next model call the budget "
    "cannot cover makes no new call and ends `failed` with `BUDGET_EXCEEDED`, its partial result kept; crossing "
    "`soft_limit_percent` emits `budget_warning` on the run, an audit entry and a metric, once per period. "
    "A budget needs `limit_usd`, `limit_tokens` or both; `scope_id` names an existing team, API key or provider "
    "(none for `global`): else 422 `VALIDATION_ERROR`."
)
NOT_FOUND = errors({404: "BUDGET_NOT_FOUND"})


@router.post(
    "/budgets",
    response_model=BudgetRead,
    status_code=status.HTTP_201_CREATED,
    operation_id="createBudget",
    summary="Create a budget",
    description=SPEND_DESCRIPTION,
)
async def create_budget(
    body: BudgetCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> BudgetRead:
    return await service.create_budget(session, context.config_cache, body, actor=principal.actor)


@router.get(
    "/budgets",
    response_model=Page[BudgetRead],
    operation_id="listBudgets",
    summary="List budgets with their spend",
    description="Each budget with what its current period has spent, what is left and when it resets.",
)
async def list_budgets(
    _: OperatorDep,
    session: SessionDep,
    page: PageQuery,
    scope: Annotated[BudgetScope | None, Query()] = None,
    scope_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Page[BudgetRead]:
    return await service.list_budgets(session, page, scope=scope, scope_id=scope_id)


@router.get(
    "/budgets/{budget_id}",
    response_model=BudgetRead,
    operation_id="getBudget",
    summary="Get a budget",
    responses=NOT_FOUND,
    description="The budget with what its current period has spent, what is left and when it resets.",
)
async def get_budget(budget_id: uuid.UUID, _: OperatorDep, session: SessionDep) -> BudgetRead:
    return await service.get_budget(session, budget_id)


@router.put(
    "/budgets/{budget_id}",
    response_model=BudgetRead,
    operation_id="updateBudget",
    summary="Change a budget's limits",
    responses=NOT_FOUND,
    description="The limits, period and soft limit; the scope stays. " + SPEND_DESCRIPTION,
)
async def update_budget(
    budget_id: uuid.UUID, body: BudgetUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> BudgetRead:
    return await service.update_budget(session, context.config_cache, budget_id, body, actor=principal.actor)


@router.delete(
    "/budgets/{budget_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteBudget",
    summary="Delete a budget",
    responses=NOT_FOUND,
    description="Its limits stop applying at once; the ledger of calls (usage reports) keeps what was spent.",
)
async def delete_budget(
    budget_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_budget(session, context.config_cache, budget_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/usage",
    response_model=list[UsageRow],
    operation_id="getUsage",
    summary="Usage report",
    description="Tokens, cost (USD) and runs of the model calls made in [`from`, `to`) (default: the last 30 "
    "days), grouped by team, model (`provider/model`), provider, API key or UTC day: a row per group with calls "
    "(none when `from` is not before `to`). Sums are null-aware: a group with a call whose count or price is "
    "unknown shows null, never a partial number.",
)
async def usage(
    _: OperatorDep,
    session: SessionDep,
    since: Annotated[QueryDatetime | None, Query(alias="from", description="at or after this time")] = None,
    until: Annotated[QueryDatetime | None, Query(alias="to", description="before this time")] = None,
    group_by: Annotated[UsageGroup, Query()] = UsageGroup.day,
) -> list[UsageRow]:
    return await service.usage_report(session, since=since, until=until, group_by=group_by)
