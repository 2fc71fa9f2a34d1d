"""HTTP routes of Agent Teams: reads need viewer, every write and re-validation needs operator."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http_status

from aiops_executor.auth.dependencies import OperatorDep, ViewerDep
from aiops_executor.core.deps import PageQuery, SessionDep
from aiops_executor.core.openapi import errors
from aiops_executor.core.pagination import Page
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.executions import service as executions
from aiops_executor.teams import service
from aiops_executor.teams.schemas import TeamCreated, TeamRead, TeamStatus, TeamSummary, TeamUpdate, TeamValidation

router = APIRouter(tags=["teams"])

NO_CONTENT = http_status.HTTP_204_NO_CONTENT
CREATED = http_status.HTTP_201_CREATED
NOT_FOUND = {404: "TEAM_NOT_FOUND"}
INVALID = {400: {"INVALID_TOPOLOGY": "the topology breaks a rule; details.errors lists every problem"}}
NAME_TAKEN = {"TEAM_NAME_EXISTS": "another team has this team_name"}
CONFIG_RACE = {"CONFLICT": "the LLM configuration changed while the team was saved; retry"}


@router.post(
    "/teams",
    response_model=TeamCreated,
    status_code=CREATED,
    operation_id="createTeam",
    summary="Create a team from a topology",
    description="Validates the topology (nodes, edges, agents, the models they name, strategies, limits) and "
    "stores it as an `active` Agent Team: a Global Supervisor over one Node Team per resource. Answers the "
    "team's id and a summary of its topology.",
    responses=errors({**INVALID, 409: {**NAME_TAKEN, **CONFIG_RACE}}),
)
async def create_team(data: TeamSpec, principal: OperatorDep, session: SessionDep) -> TeamCreated:
    return await service.create_team(session, data, actor=principal.actor)


@router.get(
    "/teams",
    response_model=Page[TeamSummary],
    operation_id="listTeams",
    summary="List teams",
    description="Teams by name, a page at a time; `status` keeps only teams in that status.",
)
async def list_teams(
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    status: Annotated[TeamStatus | None, Query(description="only teams in this status")] = None,
) -> Page[TeamSummary]:
    return await service.list_teams(session, page, status=status)


@router.get(
    "/teams/{team_id}",
    response_model=TeamRead,
    operation_id="getTeam",
    summary="Read a team",
    description="The team's whole definition (topology, supervisors, agents), status and last validation error.",
    responses=errors(NOT_FOUND),
)
async def get_team(team_id: uuid.UUID, _: ViewerDep, session: SessionDep) -> TeamRead:
    return await service.get_team(session, team_id)


@router.put(
    "/teams/{team_id}",
    response_model=TeamRead,
    operation_id="updateTeam",
    summary="Update a team",
    description="A partial update: omitted fields keep their value (none may be null). A definition change, or "
    "`status: active` on a team that is not, re-validates the whole resulting team.",
    responses=errors({**INVALID, **NOT_FOUND, 409: {**NAME_TAKEN, **CONFIG_RACE}}),
)
async def update_team(team_id: uuid.UUID, data: TeamUpdate, principal: OperatorDep, session: SessionDep) -> TeamRead:
    return await service.update_team(session, team_id, data, actor=principal.actor)


@router.delete(
    "/teams/{team_id}",
    status_code=NO_CONTENT,
    operation_id="deleteTeam",
    summary="Delete a team",
    description="Deletes the team. Refused while one of its executions is unfinished.",
    responses=errors({**NOT_FOUND, 409: {"EXECUTION_RUNNING": "an execution of the team is unfinished"}}),
)
async def delete_team(team_id: uuid.UUID, principal: OperatorDep, session: SessionDep) -> Response:
    await service.delete_team(session, team_id, actor=principal.actor, has_unfinished=executions.has_unfinished)
    return Response(status_code=NO_CONTENT)


@router.post(
    "/teams/{team_id}/validate",
    response_model=TeamValidation,
    operation_id="validateTeam",
    summary="Re-validate a team",
    description="Checks the stored team again against the current LLM configuration (a model may have been "
    "deleted or disabled since) and answers the problems found and the team's status after the check: "
    "`error` when it no longer validates, `active` again when it does.",
    responses=errors(NOT_FOUND),
)
async def validate_team(team_id: uuid.UUID, principal: OperatorDep, session: SessionDep) -> TeamValidation:
    return await service.revalidate_team(session, team_id, actor=principal.actor)
