"""HTTP routes of Agent Teams: reads need viewer, every write and re-validation needs operator."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http_status

from aiops_executor.auth.dependencies import OperatorDep, ViewerDep
from aiops_executor.core.deps import SessionDep
from aiops_executor.core.errors import error_responses
from aiops_executor.core.pagination import Page, PageQuery
from aiops_executor.teams import service
from aiops_executor.teams.schemas import TeamCreated, TeamRead, TeamStatus, TeamSummary, TeamUpdate, TeamValidation
from aiops_executor.teams.topology import TeamSpec

router = APIRouter(tags=["teams"])

NO_CONTENT = http_status.HTTP_204_NO_CONTENT
CREATED = http_status.HTTP_201_CREATED


@router.post("/teams", response_model=TeamCreated, status_code=CREATED, responses=error_responses(400, 409))
async def create_team(data: TeamSpec, principal: OperatorDep, session: SessionDep) -> TeamCreated:
    return await service.create_team(session, data, actor=principal.actor)


@router.get("/teams", response_model=Page[TeamSummary])
async def list_teams(
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    status: Annotated[TeamStatus | None, Query(description="only teams in this status")] = None,
) -> Page[TeamSummary]:
    return await service.list_teams(session, page, status=status)


@router.get("/teams/{team_id}", response_model=TeamRead, responses=error_responses(404))
async def get_team(team_id: uuid.UUID, _: ViewerDep, session: SessionDep) -> TeamRead:
    return await service.get_team(session, team_id)


@router.put("/teams/{team_id}", response_model=TeamRead, responses=error_responses(400, 404, 409))
async def update_team(team_id: uuid.UUID, data: TeamUpdate, principal: OperatorDep, session: SessionDep) -> TeamRead:
    return await service.update_team(session, team_id, data, actor=principal.actor)


@router.delete("/teams/{team_id}", status_code=NO_CONTENT, responses=error_responses(404, 409))
async def delete_team(team_id: uuid.UUID, principal: OperatorDep, session: SessionDep) -> Response:
    await service.delete_team(session, team_id, actor=principal.actor)
    return Response(status_code=NO_CONTENT)


@router.post("/teams/{team_id}/validate", response_model=TeamValidation, responses=error_responses(404))
async def validate_team(team_id: uuid.UUID, principal: OperatorDep, session: SessionDep) -> TeamValidation:
    return await service.revalidate_team(session, team_id, actor=principal.actor)
