"""Applying a partial update to a stored row, and flushing it when a unique constraint may race."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.errors import ConflictError


def apply_changes(row: object, values: Mapping[str, Any]) -> list[str]:
    """Set the attributes that differ; returns the changed field names (never their values)."""
    changed = []
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed.append(name)
    return changed


async def flush_or_conflict(session: AsyncSession, conflict: ConflictError) -> None:
    """Flush; a unique-constraint race lost to a concurrent writer answers 409 like the pre-check does."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise conflict from None
