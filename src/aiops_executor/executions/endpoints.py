"""Executions API (thin: the rules live in ``executions.service``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi import status as http_status
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from aiops_executor.auth.dependencies import OperatorDep, ViewerDep
from aiops_executor.auth.rate_limits import RATE_LIMITED_RESPONSE, ExecutionOperatorDep
from aiops_executor.core.deps import SessionDep
from aiops_executor.core.errors import AppError, ValidationFailed, error_responses
from aiops_executor.core.pagination import Page, PageQuery
from aiops_executor.executions import service
from aiops_executor.executions.schemas import (
    MAX_SEQ,
    ApprovalDecision,
    ApprovalRead,
    EventRead,
    ExecuteRequest,
    ExecutionRead,
    ExecutionRequest,
    ExecutionStatus,
    StructuredOutputRequest,
    StructuredOutputResult,
)
from aiops_executor.executions.sse import execution_stream_response
from aiops_executor.services import ServiceContext, ServiceContextDep

router = APIRouter(tags=["executions"])

API_PREFIX = "/api/v1"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "The execution's events (Server-Sent Events)"}
}


def _no_comment_pings(context: ServiceContext) -> float:
    """The stream sends its own ``heartbeat`` events; sse-starlette's ``: ping`` comments would only confuse
    clients that surface them as empty messages, so their interval is pushed past the stream's idle close."""
    return context.settings.sse_idle_close_seconds + 60


def _location(execution_id: uuid.UUID) -> str:
    return f"{API_PREFIX}/executions/{execution_id}"


@router.post(
    "/teams/{team_id}/execute",
    response_model=ExecutionRead,
    responses={
        **STREAM_RESPONSE,
        **error_responses(400, 404, 409),
        408: {"description": "EXECUTION_TIMEOUT, with the partial result"},
        **RATE_LIMITED_RESPONSE,
    },
)
async def execute_team(
    team_id: uuid.UUID,
    body: ExecuteRequest,
    principal: ExecutionOperatorDep,
    session: SessionDep,
    context: ServiceContextDep,
) -> Response:
    manager = context.executions
    execution = await service.start_execution(session, context, manager, team_id, body, actor=principal.actor)
    headers = {"Location": _location(execution.id)}
    # Streaming or waiting can last minutes: hold no database transaction meanwhile.
    await session.close()
    if body.stream:
        return execution_stream_response(
            context,
            manager.broadcaster,
            execution,
            after=0,
            headers={**SSE_HEADERS, **headers},
            ping=_no_comment_pings(context),
        )
    await manager.wait(execution.id)
    finished = service.execution_read(await service.get_execution_row(session, execution.id))
    if finished.status is ExecutionStatus.timeout:
        raise AppError(
            finished.error_message or "the execution timed out",
            error_code="EXECUTION_TIMEOUT",
            status_code=http_status.HTTP_408_REQUEST_TIMEOUT,
            details={"execution_id": str(finished.execution_id)},
            extra_fields={"partial_result": finished.model_dump(mode="json")},
        )
    return JSONResponse(finished.model_dump(mode="json"), headers=headers)


@router.post(
    "/teams/{team_id}/executions",
    response_model=ExecutionRead,
    status_code=http_status.HTTP_202_ACCEPTED,
    responses={**error_responses(400, 404, 409), **RATE_LIMITED_RESPONSE},
)
async def submit_execution(
    team_id: uuid.UUID,
    body: ExecutionRequest,
    principal: ExecutionOperatorDep,
    session: SessionDep,
    context: ServiceContextDep,
    response: Response,
) -> ExecutionRead:
    execution = await service.start_execution(
        session, context, context.executions, team_id, body, actor=principal.actor
    )
    response.headers["Location"] = _location(execution.id)
    return service.execution_read(execution)


@router.get("/teams/{team_id}/executions", response_model=Page[ExecutionRead], responses=error_responses(404))
async def list_team_executions(
    team_id: uuid.UUID,
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    status: ExecutionStatus | None = None,
) -> Page[ExecutionRead]:
    return await service.list_team_executions(session, team_id, page, status=status)


@router.get("/executions/{execution_id}", response_model=ExecutionRead, responses=error_responses(404))
async def get_execution(execution_id: uuid.UUID, _: ViewerDep, session: SessionDep) -> ExecutionRead:
    return service.execution_read(await service.get_execution_row(session, execution_id))


@router.get("/executions/{execution_id}/events", response_model=Page[EventRead], responses=error_responses(404))
async def list_execution_events(
    execution_id: uuid.UUID,
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="only events with a greater seq")] = 0,
) -> Page[EventRead]:
    return await service.list_events(session, execution_id, after, page)


@router.get("/executions/{execution_id}/stream", responses={**STREAM_RESPONSE, **error_responses(404)})
async def stream_execution(
    execution_id: uuid.UUID,
    _: ViewerDep,
    session: SessionDep,
    context: ServiceContextDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="like Last-Event-ID, for clients that cannot set it")
    ] = None,
) -> EventSourceResponse:
    execution = await service.get_execution_row(session, execution_id)
    start = after if after is not None else _parse_last_event_id(last_event_id)
    await session.close()  # the stream may last minutes: hold no database transaction meanwhile
    return execution_stream_response(
        context,
        context.executions.broadcaster,
        execution,
        after=start,
        headers=SSE_HEADERS,
        ping=_no_comment_pings(context),
    )


def _parse_last_event_id(value: str | None) -> int:
    if value is None or value.strip() == "":
        return 0
    try:
        seq = int(value.strip())
    except ValueError:
        raise _bad_last_event_id("Last-Event-ID must be the integer id of an event", "not an integer") from None
    if seq < 0:
        raise _bad_last_event_id("Last-Event-ID must not be negative", "negative")
    if seq > MAX_SEQ:
        raise _bad_last_event_id(f"Last-Event-ID must be at most {MAX_SEQ}", "too large")
    return seq


def _bad_last_event_id(message: str, reason: str) -> ValidationFailed:
    return ValidationFailed(message, details={"errors": [{"field": "Last-Event-ID", "message": reason}]})


@router.post(
    "/executions/{execution_id}/cancel",
    response_model=ExecutionRead,
    status_code=http_status.HTTP_202_ACCEPTED,
    responses={**error_responses(404, 409), **RATE_LIMITED_RESPONSE},
)
async def cancel_execution(
    execution_id: uuid.UUID, principal: ExecutionOperatorDep, session: SessionDep, context: ServiceContextDep
) -> ExecutionRead:
    execution = await service.cancel_execution(session, context.executions, execution_id, actor=principal.actor)
    return service.execution_read(execution)


@router.post(
    "/teams/{team_id}/structured-output",
    response_model=StructuredOutputResult,
    responses={**error_responses(404, 409), **RATE_LIMITED_RESPONSE},
)
async def team_structured_output(
    team_id: uuid.UUID,
    body: StructuredOutputRequest,
    _: ExecutionOperatorDep,
    session: SessionDep,
    context: ServiceContextDep,
) -> StructuredOutputResult:
    return await service.structured_output(session, context, team_id, body)


@router.get(
    "/executions/{execution_id}/approvals",
    response_model=Page[ApprovalRead],
    operation_id="listExecutionApprovals",
    summary="List the tool calls of a run that need a person's approval",
    description=(
        "Every call of the run that waited (or waits) for approval, oldest first: the tool, its arguments (secrets "
        "redacted), its status (`pending`, `approved`, `rejected`, `cancelled`), who decided and when, and the "
        "deadline after which an undecided call is rejected. Any authenticated caller. Errors: 404 "
        "`EXECUTION_NOT_FOUND`."
    ),
    responses=error_responses(404),
)
async def list_execution_approvals(
    execution_id: uuid.UUID, _: ViewerDep, session: SessionDep, page: PageQuery
) -> Page[ApprovalRead]:
    return await service.list_approvals(session, execution_id, page)


@router.post(
    "/executions/{execution_id}/approvals/{approval_id}",
    response_model=ApprovalRead,
    operation_id="decideExecutionApproval",
    summary="Approve or reject a tool call the run waits for",
    description=(
        "Records the decision (audited with who decided) and its `approval_resolved` event. Once no call of the run "
        "waits any more, the run resumes from its checkpoint on any worker: an approved call is made, a rejected "
        "one returns the rejection and the comment to the agent as the tool's result. Operators and admins. "
        "Errors: 404 `EXECUTION_NOT_FOUND` / `APPROVAL_NOT_FOUND`; 409 `APPROVAL_ALREADY_DECIDED`, "
        "`EXECUTION_NOT_AWAITING_APPROVAL` (the run was cancelled or finished)."
    ),
    responses=error_responses(404, 409),
)
async def decide_execution_approval(
    execution_id: uuid.UUID,
    approval_id: uuid.UUID,
    body: ApprovalDecision,
    principal: OperatorDep,
    session: SessionDep,
    context: ServiceContextDep,
) -> ApprovalRead:
    return await service.decide_approval(
        session, context.executions, execution_id, approval_id, body, actor=principal.actor
    )
