"""Team rules and storage: create, read, update, delete and re-validate Agent Teams.

Conventions of this module:
- A team is stored only when ``teams.validation.validate_team`` finds no error. The LLM configuration it is
  checked against is loaded fresh (two queries, never the read cache) so a write never validates against
  another process's stale snapshot.
- The models a team uses are kept in ``team_model_references`` (rewritten on every create, update and
  validate), which lets ``llm.service`` refuse to delete a provider or a model a team still needs. Team
  writes hold a shared row lock on the providers and models they reference until they commit, and the LLM
  deletes lock the row they delete before they look for references, so neither can slip past the other.
- Status: ``active`` teams run, ``inactive`` ones were switched off by a user, ``error`` ones failed their
  last validation. ``POST /teams/{id}/validate`` moves an invalid ``active`` team to ``error`` and a valid
  ``error`` team back to ``active``; it leaves an ``inactive`` team ``inactive`` either way (activating it
  through ``PUT`` re-validates it).
- Every write adds its audit entry (resource type ``team``) to the same transaction, then commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.changes import apply_changes, flush_or_conflict
from aiops_executor.core.errors import AppError, ConflictError, NotFoundError
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.engine.topology import TeamSpec, Topology
from aiops_executor.llm import catalog
from aiops_executor.teams.models import Team, TeamModelReference
from aiops_executor.teams.schemas import (
    TeamCreated,
    TeamRead,
    TeamStatus,
    TeamSummary,
    TeamUpdate,
    TeamValidation,
    TopologySummary,
)
from aiops_executor.teams.validation import (
    ValidationReport,
    topology_depth,
    validate_team,
)
from aiops_executor.tool_servers import service as tool_servers
from aiops_executor.tools.builtin import default_registry

T = TypeVar("T")

RESOURCE = "team"
# TeamUpdate fields that change the team's definition (everything but its status).
DEFINITION_FIELDS = ("team_name", "description", "timeout_seconds", "max_iterations", "topology")


# --------------------------------------------------------------------------------------------- helpers


class InvalidTopology(AppError):
    status_code = 400
    error_code = "INVALID_TOPOLOGY"

    def __init__(self, report: ValidationReport) -> None:
        count = len(report.errors)
        first = report.errors[0]
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(
            f"the team definition has {count} problem{'s' if count > 1 else ''}: {first.path}: {first.message}{more}",
            details={
                "errors": [issue.model_dump() for issue in report.errors],
                "invalid_nodes": report.invalid_nodes,
                "missing_references": report.missing_references,
                "warnings": [issue.model_dump() for issue in report.warnings],
            },
        )


def team_name_taken(name: str) -> ConflictError:
    return ConflictError(f"a team named {name!r} already exists", error_code="TEAM_NAME_EXISTS", details={"name": name})


async def _ensure_team_name_free(session: AsyncSession, name: str, *, exclude: uuid.UUID | None = None) -> None:
    stmt = select(Team.id).where(Team.name == name)
    if exclude is not None:
        stmt = stmt.where(Team.id != exclude)
    if await session.scalar(stmt.limit(1)) is not None:
        raise team_name_taken(name)


async def tool_names(session: AsyncSession) -> set[str]:
    """Names of the tools agents may list: the built-in ones and those of the active MCP tool servers."""
    return default_registry().names() | await tool_servers.catalog_names(session)


async def check_team(
    session: AsyncSession, spec: TeamSpec, models: catalog.ModelCatalog | None = None
) -> ValidationReport:
    """Every problem of ``spec`` against today's LLM configuration (``models``, when the caller has loaded it)
    and tool registry."""
    return validate_team(spec, models or await catalog.load(session), await tool_names(session))


async def _validated(session: AsyncSession, spec: TeamSpec) -> ValidationReport:
    report = await check_team(session, spec)
    if not report.valid:
        raise InvalidTopology(report)
    return report


async def _hold_references(session: AsyncSession, references: set[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """The referenced providers and models stay until commit; a delete that won the race answers 409 rather
    than being missed."""
    if not await catalog.hold(session, references):
        raise ConflictError(
            "the LLM configuration changed while the team was being saved; retry", error_code="CONFLICT"
        )


async def _sync_references(
    session: AsyncSession, team_id: uuid.UUID, references: set[tuple[uuid.UUID, uuid.UUID]]
) -> None:
    await _hold_references(session, references)
    stored = {
        (ref.provider_id, ref.model_row_id): ref
        for ref in await session.scalars(select(TeamModelReference).where(TeamModelReference.team_id == team_id))
    }
    for key, ref in stored.items():
        if key not in references:
            await session.delete(ref)
    for provider_id, model_row_id in references - stored.keys():
        session.add(
            TeamModelReference(id=uuid.uuid4(), team_id=team_id, provider_id=provider_id, model_row_id=model_row_id)
        )


def _definition_columns(spec: TeamSpec) -> dict[str, Any]:
    topology = spec.topology
    return {
        "name": spec.team_name,
        "description": spec.description,
        "timeout_seconds": spec.timeout_seconds,
        "max_iterations": spec.max_iterations,
        "topology": topology.model_dump(mode="json"),
        "node_count": len(topology.nodes),
        "agent_count": sum(len(node.agents) for node in topology.nodes),
        "edge_count": len(topology.edges),
        "depth": topology_depth(spec),
    }


def _summary(team: Team) -> TopologySummary:
    return TopologySummary(
        node_count=team.node_count, agent_count=team.agent_count, edge_count=team.edge_count, depth=team.depth
    )


def _team_fields(team: Team) -> dict[str, Any]:
    return {
        "team_id": team.id,
        "team_name": team.name,
        "description": team.description,
        "status": team.status,
        "timeout_seconds": team.timeout_seconds,
        "max_iterations": team.max_iterations,
        "topology_summary": _summary(team),
        "created_at": team.created_at,
        "updated_at": team.updated_at,
    }


def team_read(team: Team) -> TeamRead:
    return TeamRead(**_team_fields(team), topology=Topology.model_validate(team.topology))


def team_spec(team: Team) -> TeamSpec:
    """The stored definition as the ``TeamSpec`` it was created from (what the engine runs)."""
    return TeamSpec(
        team_name=team.name,
        description=team.description,
        timeout_seconds=team.timeout_seconds,
        max_iterations=team.max_iterations,
        topology=Topology.model_validate(team.topology),
    )


# --------------------------------------------------------------------------------------------- reads


async def get_team_row(session: AsyncSession, team_id: uuid.UUID, *, lock: bool = False) -> Team:
    """A team, or 404 ``TEAM_NOT_FOUND``. ``lock`` takes a row lock (PostgreSQL) for read-modify-write."""
    stmt = select(Team).where(Team.id == team_id)
    if lock:
        stmt = stmt.with_for_update()
    team = await session.scalar(stmt)
    if team is None:
        raise NotFoundError("team", team_id)
    return team


async def find_team(session: AsyncSession, name_or_id: str) -> Team | None:
    """The team with this name, else with this id (names are unique); None when there is none."""
    team = await session.scalar(select(Team).where(Team.name == name_or_id))
    if team is not None:
        return team
    try:
        return await session.get(Team, uuid.UUID(name_or_id))
    except ValueError:
        return None


async def get_team(session: AsyncSession, team_id: uuid.UUID) -> TeamRead:
    return team_read(await get_team_row(session, team_id))


async def list_teams(session: AsyncSession, page: PageParams, *, status: TeamStatus | None = None) -> Page[TeamSummary]:
    stmt = select(Team)
    if status is not None:
        stmt = stmt.where(Team.status == status.value)
    rows, total = await paginate(session, stmt.order_by(Team.name, Team.id), page)
    return Page[TeamSummary].build([TeamSummary(**_team_fields(row)) for row in rows], total, page)


def ensure_active(team: Team) -> None:
    """Only ``active`` teams execute: 409 ``TEAM_NOT_ACTIVE`` otherwise."""
    if team.status != TeamStatus.active:
        raise ConflictError(
            f"team {team.name!r} is {team.status}; only active teams execute",
            error_code="TEAM_NOT_ACTIVE",
            details={"id": str(team.id), "status": team.status},
        )


# --------------------------------------------------------------------------------------------- writes


async def create_team(session: AsyncSession, spec: TeamSpec, *, actor: str) -> TeamCreated:
    await _ensure_team_name_free(session, spec.team_name)
    report = await _validated(session, spec)
    team = Team(id=uuid.uuid4(), status=TeamStatus.active.value, **_definition_columns(spec))
    session.add(team)
    await flush_or_conflict(session, team_name_taken(spec.team_name))
    await _sync_references(session, team.id, report.model_references)
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type=RESOURCE,
        resource_id=team.id,
        details={"name": team.name, "node_count": team.node_count, "agent_count": team.agent_count},
    )
    await session.commit()
    return TeamCreated(team_id=team.id, created_at=team.created_at, topology_summary=_summary(team))


async def update_team(session: AsyncSession, team_id: uuid.UUID, data: TeamUpdate, *, actor: str) -> TeamRead:
    """Partial update. A definition change or ``status: active`` re-validates the whole resulting team (400
    ``INVALID_TOPOLOGY``); a successful re-validation also clears ``error`` unless ``inactive`` is asked for."""
    team = await get_team_row(session, team_id, lock=True)
    given = data.model_fields_set
    current = team_spec(team)
    spec = current
    if given & set(DEFINITION_FIELDS):
        spec = TeamSpec.model_validate(
            {**current.model_dump(), **{name: getattr(data, name) for name in DEFINITION_FIELDS if name in given}}
        )
    values: dict[str, Any] = {}
    if spec.team_name != team.name:
        await _ensure_team_name_free(session, spec.team_name, exclude=team.id)
    status = data.status.value if data.status is not None else team.status
    if given & set(DEFINITION_FIELDS) or (status == TeamStatus.active and team.status != TeamStatus.active):
        report = await _validated(session, spec)
        await _sync_references(session, team.id, report.model_references)
        values.update(_definition_columns(spec))
        if data.status is None and team.status == TeamStatus.error:
            status = TeamStatus.active.value
    values["status"] = status
    changed = apply_changes(team, values)
    if changed:
        await flush_or_conflict(session, team_name_taken(team.name))
        audit.record(
            session,
            actor=actor,
            action="update",
            resource_type=RESOURCE,
            resource_id=team.id,
            details={"name": team.name, "fields": changed},
        )
    await session.commit()
    return team_read(team)


# Whether a team has an unfinished execution: the executions domain's answer (it builds on teams, so it is
# handed in by the endpoint rather than imported here).
UnfinishedRuns = Callable[[AsyncSession, uuid.UUID], Awaitable[bool]]


async def _ensure_no_running_execution(session: AsyncSession, team: Team, has_unfinished: UnfinishedRuns) -> None:
    """Refuse (409 ``EXECUTION_RUNNING``) to delete a team while one of its executions is unfinished."""
    if await has_unfinished(session, team.id):
        raise ConflictError(
            f"team {team.name!r} has an execution running; cancel it or wait for it to finish",
            error_code="EXECUTION_RUNNING",
            details={"id": str(team.id)},
        )


async def delete_team(session: AsyncSession, team_id: uuid.UUID, *, actor: str, has_unfinished: UnfinishedRuns) -> None:
    team = await get_team_row(session, team_id, lock=True)
    await _ensure_no_running_execution(session, team, has_unfinished)
    await session.execute(delete(TeamModelReference).where(TeamModelReference.team_id == team.id))
    await session.delete(team)
    audit.record(
        session, actor=actor, action="delete", resource_type=RESOURCE, resource_id=team.id, details={"name": team.name}
    )
    await session.commit()


async def revalidate_team(session: AsyncSession, team_id: uuid.UUID, *, actor: str) -> TeamValidation:
    """Re-check a stored team against today's LLM configuration and tool registry (200 either way).

    Invalid: an ``active`` team becomes ``error``. Valid: an ``error`` team becomes ``active`` again.
    ``inactive`` stays ``inactive``. The team's model references are refreshed.
    """
    team = await get_team_row(session, team_id, lock=True)
    report = await check_team(session, team_spec(team))
    status = team.status
    if not report.valid and status == TeamStatus.active:
        status = TeamStatus.error.value
    elif report.valid and status == TeamStatus.error:
        status = TeamStatus.active.value
    await _sync_references(session, team.id, report.model_references)
    previous = team.status
    team.status = status
    audit.record(
        session,
        actor=actor,
        action="validate",
        resource_type=RESOURCE,
        resource_id=team.id,
        details={"name": team.name, "valid": report.valid, "errors": len(report.errors), "status": status}
        | ({"previous_status": previous} if previous != status else {}),
    )
    await session.commit()
    return TeamValidation(
        valid=report.valid,
        errors=report.errors,
        warnings=report.warnings,
        invalid_nodes=report.invalid_nodes,
        missing_references=report.missing_references,
        status=TeamStatus(team.status),
    )
