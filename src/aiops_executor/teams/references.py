"""Which teams use a provider or a model: what ``llm.service`` asks before deleting one.

Kept apart from ``teams.service`` (which builds on ``llm.service``) so the LLM domain can import it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.teams.models import Team, TeamModelReference


async def teams_using(
    session: AsyncSession, *, provider_id: uuid.UUID | None = None, model_row_id: uuid.UUID | None = None
) -> list[dict[str, str]]:
    """``[{"id", "name"}]`` of the teams whose definition uses this provider or this model, by name."""
    stmt = select(Team.id, Team.name).join(TeamModelReference, TeamModelReference.team_id == Team.id).distinct()
    if provider_id is not None:
        stmt = stmt.where(TeamModelReference.provider_id == provider_id)
    if model_row_id is not None:
        stmt = stmt.where(TeamModelReference.model_row_id == model_row_id)
    rows = await session.execute(stmt.order_by(Team.name))
    return [{"id": str(row.id), "name": row.name} for row in rows]
