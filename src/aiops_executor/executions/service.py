"""Execution rules: who may start what, reads, cancel, structured output from a finished run."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.db import serialize_transaction
from aiops_executor.core.errors import AppError, ConflictError, NotFoundError, ValidationFailed
from aiops_executor.core.pagination import Page, PageParams, paginate
from aiops_executor.engine import prompts
from aiops_executor.engine.events import GLOBAL_SUPERVISOR_ID
from aiops_executor.engine.structured import InvalidOutputSchema, check_schema, generate_structured_output
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.executions import repository
from aiops_executor.executions.manager import ExecutionManager
from aiops_executor.executions.models import Execution, ExecutionApproval, ExecutionEventRow
from aiops_executor.executions.schemas import (
    UNFINISHED,
    ApprovalDecision,
    ApprovalRead,
    ApprovalStatus,
    EventRead,
    ExecutionRead,
    ExecutionRequest,
    ExecutionStatus,
    SchemaValidation,
    StructuredOutputRequest,
    StructuredOutputResult,
)
from aiops_executor.llm import catalog
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.llm.runtime.service import ModelRuntime
from aiops_executor.spend import service as spend_service
from aiops_executor.teams import service as teams_service

RESOURCE = "execution"
FINISHED = tuple(s.value for s in ExecutionStatus if s.value not in UNFINISHED)


def execution_read(row: Execution) -> ExecutionRead:
    return ExecutionRead(
        execution_id=row.id,
        team_id=row.team_id,
        status=ExecutionStatus(row.status),
        input=row.input,
        timeout_seconds=row.timeout_seconds,
        started_at=row.started_at,
        completed_at=row.completed_at,
        duration_ms=row.duration_ms,
        result=row.result,
        structured_output=row.structured_output,
        usage=row.usage or {},
        error_code=row.error_code,
        error_message=row.error_message,
        attempt=row.attempt,
        worker_id=row.worker_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _invalid_schema(exc: InvalidOutputSchema, error_code: str = ValidationFailed.error_code) -> ValidationFailed:
    return ValidationFailed(
        str(exc), error_code=error_code, details={"errors": [{"field": "output_schema", "message": str(exc)}]}
    )


def trigger_key(source: str, key: str) -> str:
    """The stored identity of what started a run (``source``: e.g. ``alertmanager``; ``key``: its group key)."""
    return hashlib.sha256(f"{source}\x00{key}".encode()).hexdigest()


class TriggerRunning(ConflictError):
    """The trigger already has a pending or running execution: it starts no second one."""

    def __init__(self, execution_id: uuid.UUID | None) -> None:
        running = f" ({execution_id})" if execution_id else ""
        super().__init__(
            f"an execution started by the same trigger is still pending or running{running}",
            error_code="TRIGGER_RUNNING",
            details={"execution_id": str(execution_id) if execution_id else None},
        )
        self.execution_id = execution_id


async def unfinished_for_trigger(session: AsyncSession, key: str) -> uuid.UUID | None:
    return await session.scalar(
        select(Execution.id).where(Execution.trigger_key == key, Execution.status.in_(UNFINISHED)).limit(1)
    )


async def has_unfinished(session: AsyncSession, team_id: uuid.UUID) -> bool:
    found = await session.scalar(
        select(Execution.id).where(Execution.team_id == team_id, Execution.status.in_(UNFINISHED)).limit(1)
    )
    return found is not None


async def _check_budgets(
    session: AsyncSession,
    manager: ExecutionManager,
    team_id: uuid.UUID,
    api_key_id: uuid.UUID | None,
    spec: TeamSpec,
    models: catalog.ModelCatalog,
) -> None:
    if manager.spend is None or not await manager.spend.rules(session):
        return  # no budget is kept: nothing to read
    topology = spec.topology
    refs = {topology.global_supervisor.model_provider}
    for node in topology.nodes:
        refs.add(node.supervisor_config.model_provider)
        refs.update(agent.model_provider for agent in node.agents)
    providers = {entry.id for entry in (models.provider(ref) for ref in refs) if entry is not None}
    await spend_service.check_start(
        session, manager.spend, team_id=team_id, api_key_id=api_key_id, provider_ids=providers
    )


async def start_execution(
    session: AsyncSession,
    manager: ExecutionManager,
    team_id: uuid.UUID,
    request: ExecutionRequest,
    *,
    actor: str,
    api_key_id: uuid.UUID | None = None,
    trigger: str | None = None,
) -> Execution:
    """Checks the team can run now, stores a ``pending`` execution with a snapshot of the team, starts it.

    ``api_key_id``: the API key starting the run (its budgets apply to the run's calls). A spent budget of the
    team, of that key, of a provider the team uses, or the global one refuses the start (``BudgetExceeded``).

    ``trigger`` (from ``trigger_key``): what started the run when it was not a person; while an execution of
    the same trigger is pending or running no second one starts (``TriggerRunning``), which the database's
    unique index holds also when two processes race."""
    if request.output_schema is not None:
        try:
            check_schema(request.output_schema)
        except InvalidOutputSchema as exc:
            raise _invalid_schema(exc) from exc
    async with manager.admission:
        # "Is this team already running?" and creating its execution, as one step across processes too.
        await serialize_transaction(session, f"team-executions:{team_id}")
        team = await teams_service.get_team_row(session, team_id)
        teams_service.ensure_active(team)
        spec = teams_service.team_spec(team)
        # The team must still hold against today's configuration (a provider may have been switched off).
        models = await catalog.load(session)
        report = await teams_service.check_team(session, spec, models)
        if not report.valid:
            raise teams_service.InvalidTopology(report)
        await _check_budgets(session, manager, team.id, api_key_id, spec, models)
        if trigger is not None:
            running = await unfinished_for_trigger(session, trigger)
            if running is not None:
                raise TriggerRunning(running)
        if not manager.settings.allow_concurrent_team_executions and await has_unfinished(session, team.id):
            raise ConflictError(
                f"team {team.name!r} already has an execution running",
                error_code="EXECUTION_RUNNING",
                details={"team_id": str(team.id)},
            )
        execution = repository.add_pending(
            session,
            team_id=team.id,
            input=request.input.model_dump(mode="json"),
            timeout_seconds=request.timeout_seconds or spec.timeout_seconds,
            output_schema=request.output_schema,
            team_snapshot=spec.model_dump(mode="json"),
            requested_by=actor,
            api_key_id=api_key_id,
            trigger_key=trigger,
        )
        audit.record(
            session,
            actor=actor,
            action="start",
            resource_type=RESOURCE,
            resource_id=execution.id,
            details={"team_id": str(team.id), "team_name": team.name},
        )
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            # Another process started a run of this trigger between the check above and this commit.
            if trigger is not None:
                running = await unfinished_for_trigger(session, trigger)
                await session.commit()
                if running is not None:
                    raise TriggerRunning(running) from None
            raise
        await manager.submit(execution.id)
    return execution


async def get_execution_row(session: AsyncSession, execution_id: uuid.UUID) -> Execution:
    row = await session.get(Execution, execution_id, populate_existing=True)
    if row is None:
        raise NotFoundError("execution", execution_id)
    return row


async def _page_of_executions(
    session: AsyncSession, conditions: list[ColumnElement[bool]], page: PageParams
) -> Page[ExecutionRead]:
    """Executions matching ``conditions``, newest first, a page at a time."""
    stmt = select(Execution).where(*conditions).order_by(Execution.created_at.desc(), Execution.id)
    rows, total = await paginate(session, stmt, page)
    return Page[ExecutionRead].build([execution_read(r) for r in rows], total, page)


async def list_team_executions(
    session: AsyncSession, team_id: uuid.UUID, page: PageParams, *, status: ExecutionStatus | None
) -> Page[ExecutionRead]:
    await teams_service.get_team_row(session, team_id)
    conditions: list[ColumnElement[bool]] = [Execution.team_id == team_id]
    if status is not None:
        conditions.append(Execution.status == status.value)
    return await _page_of_executions(session, conditions, page)


async def list_executions(
    session: AsyncSession,
    page: PageParams,
    *,
    team_id: uuid.UUID | None,
    status: ExecutionStatus | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> Page[ExecutionRead]:
    """Every team's executions, newest first; an unknown ``team_id`` is simply an empty list (a filter)."""
    conditions: list[ColumnElement[bool]] = []
    if team_id is not None:
        conditions.append(Execution.team_id == team_id)
    if status is not None:
        conditions.append(Execution.status == status.value)
    if created_after is not None:
        conditions.append(Execution.created_at >= created_after)
    if created_before is not None:
        conditions.append(Execution.created_at < created_before)
    return await _page_of_executions(session, conditions, page)


async def list_events(session: AsyncSession, execution_id: uuid.UUID, after: int, page: PageParams) -> Page[EventRead]:
    await get_execution_row(session, execution_id)
    conditions = [ExecutionEventRow.execution_id == execution_id, ExecutionEventRow.seq > after]
    rows, total = await paginate(
        session, select(ExecutionEventRow).where(*conditions).order_by(ExecutionEventRow.seq), page
    )
    return Page[EventRead].build([EventRead(seq=r.seq, event=r.type, data=r.payload) for r in rows], total, page)


def _refuse_if_finished(execution: Execution) -> None:
    if execution.status not in UNFINISHED:
        raise ConflictError(
            f"execution {execution.id} already finished ({execution.status})",
            error_code="EXECUTION_FINISHED",
            details={"id": str(execution.id), "status": execution.status},
        )


async def cancel_execution(
    session: AsyncSession, manager: ExecutionManager, execution_id: uuid.UUID, *, actor: str
) -> Execution:
    execution = await get_execution_row(session, execution_id)
    _refuse_if_finished(execution)
    # The cancel may write in transactions of its own (a run waiting for approvals): on SQLite this read one
    # would hold the write lock they need.
    await session.commit()
    if not await manager.cancel(execution.id):
        _refuse_if_finished(await get_execution_row(session, execution_id))  # it finished meanwhile
        raise ConflictError(
            f"execution {execution_id} is not running in a process that can cancel it",
            error_code="EXECUTION_NOT_CANCELLABLE",
            details={"id": str(execution_id), "status": execution.status},
        )
    audit.record(session, actor=actor, action="cancel", resource_type=RESOURCE, resource_id=execution.id)
    await session.commit()
    return execution


async def structured_output(
    session: AsyncSession, runtime: ModelRuntime, team_id: uuid.UUID, request: StructuredOutputRequest
) -> StructuredOutputResult:
    """Structured output from a finished run's findings, by the team's global supervisor model."""
    try:
        check_schema(request.output_schema)
    except InvalidOutputSchema as exc:
        # The contract's code for this route, with its fields: no structured output can follow such a schema.
        refused = _invalid_schema(exc, "SCHEMA_GENERATION_FAILED")
        refused.extra_fields = {
            "team_id": str(team_id),
            "schema_validation": SchemaValidation(
                valid=False, errors=[{"path": "$", "message": str(exc)}]
            ).model_dump(),
            "partial_output": None,
        }
        raise refused from exc
    await teams_service.get_team_row(session, team_id)
    execution = await _source_execution(session, team_id, request.execution_id)
    spec = TeamSpec.model_validate(execution.team_snapshot)
    supervisor = spec.topology.global_supervisor
    # Model calls take seconds and record usage in their own transactions: end this one first.
    await session.commit()
    # The team's calls (its budgets apply), though not the run's: the run's usage stays what the run used.
    source = RuntimeModelSource(runtime, team_id=team_id)
    model = await source.chat_model(supervisor.model_provider, supervisor.model_id, {})
    result: dict[str, Any] = execution.result or {"summary": "", "node_results": []}
    reports = [prompts.report(GLOBAL_SUPERVISOR_ID, str(result.get("summary", "")))] + [
        prompts.report(n["node_id"], f"({n['status']}) {n.get('output') or n.get('error') or ''}")
        for n in result.get("node_results", [])
    ]
    outcome = await generate_structured_output(
        model,
        request.output_schema,
        supervisor.system_prompt or prompts.DEFAULT_GLOBAL_SUPERVISOR_PROMPT,
        prompts.global_supervisor_brief(
            execution.input.get("task", ""), execution.input.get("context", {}), spec.topology.nodes
        ),
        reports,
    )
    validation = SchemaValidation(valid=outcome.valid, errors=outcome.errors)
    if not outcome.valid:
        extra: dict[str, Any] = {
            "team_id": str(team_id),
            "execution_id": str(execution.id),
            "schema_validation": validation.model_dump(),
            "partial_output": outcome.output,
        }
        if request.include_raw_output:
            extra["raw_output"] = outcome.raw_output
        raise AppError(
            f"the structured output did not match output_schema after {outcome.attempts} attempts",
            error_code="SCHEMA_GENERATION_FAILED",
            status_code=422,
            details={"execution_id": str(execution.id), "attempts": outcome.attempts},
            extra_fields=extra,
        )
    return StructuredOutputResult(
        team_id=team_id,
        execution_id=execution.id,
        structured_output=outcome.output,
        schema_validation=validation,
        raw_output=outcome.raw_output if request.include_raw_output else None,
    )


async def _source_execution(session: AsyncSession, team_id: uuid.UUID, execution_id: uuid.UUID | None) -> Execution:
    if execution_id is not None:
        execution = await get_execution_row(session, execution_id)
        if execution.team_id != team_id:
            raise NotFoundError("execution", execution_id)
        if execution.status in UNFINISHED:
            raise ConflictError(
                f"execution {execution_id} has not finished yet",
                error_code="EXECUTION_RUNNING",
                details={"id": str(execution_id)},
            )
        return execution
    latest = await session.scalar(
        select(Execution)
        .where(Execution.team_id == team_id, Execution.status.in_(FINISHED), Execution.result.is_not(None))
        .order_by(Execution.completed_at.desc())
        .limit(1)
    )
    if latest is None:
        raise NotFoundError("execution", f"(latest finished execution of team {team_id})")
    return latest


# --------------------------------------------------------------------------------------------- approvals


def approval_read(row: ExecutionApproval) -> ApprovalRead:
    return ApprovalRead(
        approval_id=row.id,
        execution_id=row.execution_id,
        tool=row.tool,
        input=row.input,
        node_id=row.node_id,
        agent_id=row.agent_id,
        status=ApprovalStatus(row.status),
        decided_by=row.decided_by,
        comment=row.comment,
        decided_at=row.decided_at,
        expires_at=row.expires_at,
        created_at=row.created_at,
    )


async def list_approvals(session: AsyncSession, execution_id: uuid.UUID, page: PageParams) -> Page[ApprovalRead]:
    await get_execution_row(session, execution_id)
    condition = ExecutionApproval.execution_id == execution_id
    stmt = select(ExecutionApproval).where(condition).order_by(ExecutionApproval.created_at, ExecutionApproval.id)
    rows, total = await paginate(session, stmt, page)
    return Page[ApprovalRead].build([approval_read(r) for r in rows], total, page)


async def list_all_approvals(
    session: AsyncSession, page: PageParams, *, status: ApprovalStatus | None = None
) -> Page[ApprovalRead]:
    """The calls of every run that waited (or wait) for a person, the latest change first (a decision, else the
    request): the inbox, in one query whatever the number of runs."""
    changed = func.coalesce(ExecutionApproval.decided_at, ExecutionApproval.created_at)
    stmt = select(ExecutionApproval).order_by(changed.desc(), ExecutionApproval.id)
    if status is not None:
        stmt = stmt.where(ExecutionApproval.status == status.value)
    rows, total = await paginate(session, stmt, page)
    return Page[ApprovalRead].build([approval_read(r) for r in rows], total, page)


async def decide_approval(
    session: AsyncSession,
    manager: ExecutionManager,
    execution_id: uuid.UUID,
    approval_id: uuid.UUID,
    body: ApprovalDecision,
    *,
    actor: str,
) -> ApprovalRead:
    """Approves or rejects a waiting call (audited with who decided); the run resumes once none waits."""
    await get_execution_row(session, execution_id)
    approve = body.decision == "approve"
    try:
        decided = await repository.decide(
            session, execution_id, approval_id, approve=approve, decided_by=actor, comment=body.comment
        )
    except repository.ApprovalNotFound:
        await session.rollback()
        raise NotFoundError("approval", approval_id) from None
    except repository.ApprovalNotPending as exc:
        await session.rollback()
        if exc.status != ApprovalStatus.pending.value:
            raise ConflictError(
                f"approval {approval_id} was decided already ({exc.status})",
                error_code="APPROVAL_ALREADY_DECIDED",
                details={"id": str(approval_id), "status": exc.status},
            ) from None
        raise ConflictError(
            f"execution {execution_id} is not waiting for approvals ({exc.execution_status})",
            error_code="EXECUTION_NOT_AWAITING_APPROVAL",
            details={"id": str(execution_id), "status": exc.execution_status},
        ) from None
    audit.record(
        session,
        actor=actor,
        action="approve_tool_call" if approve else "reject_tool_call",
        resource_type=RESOURCE,
        resource_id=execution_id,
        details={"approval_id": str(approval_id), "tool": decided.approval.tool, "comment": body.comment},
    )
    read = approval_read(decided.approval)
    await session.commit()
    await manager.after_decision(execution_id, decided)
    return read
