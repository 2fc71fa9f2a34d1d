"""What every LLM configuration service shares: caching, column mapping, conflicts, errors, endpoint rules.

Conventions of the package:
- Deleted providers are soft-deleted (``deleted_at``); they and everything under them answer 404.
- Every write adds its audit entry to the same transaction, commits, then invalidates the config cache.
- Reads go through ``context.config_cache`` and cache response schema objects (never ORM rows).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core import egress
from aiops_executor.core.context import AppContext
from aiops_executor.core.errors import ConflictError, ValidationFailed
from aiops_executor.llm.adapters import adapter_for

if TYPE_CHECKING:
    from aiops_executor.core.settings import Settings

T = TypeVar("T")

CACHE_PREFIX = "llm"
ENDPOINT_RULE_FIELDS = ("base_url", "api_version", "region")


async def cached(context: AppContext, key: tuple[Hashable, ...], loader: Callable[[], Awaitable[T]]) -> T:
    return await context.config_cache.get_or_load((CACHE_PREFIX, *key), loader)


def _column_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {_column_value(k): _column_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_column_value(v) for v in value]
    return value


def columns_of(data: BaseModel, *, only_set: bool, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """A schema's fields as column values (enums as strings, nested models as dicts, decimals kept exact)."""
    dumped = data.model_dump(exclude_unset=only_set)
    return {name: _column_value(value) for name, value in dumped.items() if name not in exclude}


def field_error(field_name: str, message: str) -> dict[str, Any]:
    return {"loc": ["body", field_name], "message": message, "type": "value_error"}


def validation_failed(errors: list[dict[str, Any]]) -> ValidationFailed:
    return ValidationFailed("; ".join(err["message"] for err in errors), details={"errors": errors})


def limit_exceeded(resource: str, limit: int, provider_id: uuid.UUID) -> ConflictError:
    return ConflictError(
        f"a provider may have at most {limit} {resource}s",
        error_code="LIMIT_EXCEEDED",
        details={"resource": resource, "limit": limit, "provider_id": str(provider_id)},
    )


async def commit_and_invalidate(session: AsyncSession, context: AppContext) -> None:
    await session.commit()
    context.config_cache.invalidate()


def check_endpoint_rules(
    provider_type: str,
    values: Mapping[str, Any],
    *,
    endpoint_name: str | None = None,
    settings: Settings | None = None,
) -> None:
    """What an endpoint of a provider type must carry, and (given ``settings``) that its base_url is not
    refused by the egress policy. Raises 422 ``VALIDATION_ERROR`` naming what is missing or the rule."""
    adapter = adapter_for(provider_type)
    if not adapter.takes_endpoints:
        raise validation_failed(
            [field_error("provider_id", f"{provider_type} providers run offline and take no endpoints")]
        )
    where = f"endpoint {endpoint_name!r} of " if endpoint_name else ""
    problems = adapter.endpoint_problems(values)
    if problems:
        raise validation_failed([field_error(p.field, where + p.message) for p in problems])
    base_url = values.get("base_url")
    if settings is not None and isinstance(base_url, str) and base_url:
        # Without DNS here: address literals and host-name rules (``check_base_url_addresses`` resolves, before
        # any lock is taken; calls resolve and check again).
        denial = egress.static_url_denial(base_url, egress.policy_for(settings))
        if denial is not None:
            raise validation_failed([field_error("base_url", where + denial.reason)])


async def check_base_url_addresses(
    base_url: str | None, settings: Settings, *, endpoint_name: str | None = None
) -> None:
    """422 ``VALIDATION_ERROR`` when ``base_url``'s host resolves to an address the egress policy denies (a name
    that does not resolve yet is let through). Called before the transaction takes its locks: a lookup can take
    seconds."""
    if not base_url:
        return
    denial = await egress.resolved_url_denial(base_url, egress.policy_for(settings))
    if denial is not None:
        where = f"endpoint {endpoint_name!r} of " if endpoint_name else ""
        raise validation_failed([field_error("base_url", where + denial.reason)])
