"""Which teams use a provider or a model: the answer to ``llm.catalog.InUse``, which the LLM endpoints hand
to ``llm.service`` when it deletes one (the LLM domain imports no team module).
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
