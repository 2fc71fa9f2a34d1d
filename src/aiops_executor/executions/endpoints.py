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
from aiops_executor.core.deps import PageQuery, SessionDep
from aiops_executor.core.errors import AppError, ValidationFailed
from aiops_executor.core.json_types import QueryDatetime
from aiops_executor.core.openapi import documented_error, errors, event_stream
from aiops_executor.core.pagination import Page
from aiops_executor.executions import service
from aiops_executor.executions.schemas import (
    MAX_SEQ,
    STREAM_EVENTS,
    ApprovalDecision,
    ApprovalRead,
    ApprovalStatus,
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
STREAM_RESPONSE = event_stream(
    STREAM_EVENTS,
    "The execution's events as Server-Sent Events (`id: <seq>`, `event: <name>`, `data: <JSON>`), ending after "
    "the terminal event (`execution_complete`, `execution_error` or `execution_cancelled`)",
)
TEAM_NOT_FOUND = {404: "TEAM_NOT_FOUND"}
EXECUTION_NOT_FOUND = {404: "EXECUTION_NOT_FOUND"}
# A start is refused with 429 by the request rate limit, or by a spent budget (both say when to retry).
START_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        **documented_error(
            429,
            {
                "RATE_LIMITED": "too many requests; retry after Retry-After seconds",
                "BUDGET_EXCEEDED": "a budget over the run (its team's, the API key's, a provider's or the global "
                "one) is spent; details name it and when it resets (Retry-After)",
            },
        ),
        "headers": RATE_LIMITED_RESPONSE[429]["headers"],
    }
}
START_ERRORS = errors(
    {
        400: {"INVALID_TOPOLOGY": "the team no longer validates against the current LLM configuration"},
        **TEAM_NOT_FOUND,
        409: {
            "TEAM_NOT_ACTIVE": "only active teams execute",
            "EXECUTION_RUNNING": "the team already has an unfinished execution",
        },
        422: {"VALIDATION_ERROR": "the body does not match the schema, or output_schema is not a JSON Schema"},
    }
)


def _no_comment_pings(context: ServiceContext) -> float:
    """The stream sends its own ``heartbeat`` events; sse-starlette's ``: ping`` comments would only confuse
    clients that surface them as empty messages, so their interval is pushed past the stream's idle close."""
    return context.settings.sse_idle_close_seconds + 60


def _location(execution_id: uuid.UUID) -> str:
    return f"{API_PREFIX}/executions/{execution_id}"


@router.post(
    "/teams/{team_id}/execute",
    response_model=ExecutionRead,
    operation_id="executeTeam",
    summary="Run a team: stream its events, or wait for its result",
    description="Starts an execution of the team with the given task. With `stream: true` (the default) the "
    "answer is the run's event stream (`text/event-stream`); the run does not depend on the client, which may "
    "go away and re-attach with `GET /executions/{id}/stream`. With `stream: false` the call waits and answers "
    "the finished execution (JSON); a run that times out answers 408 with `partial_result`. Either way the "
    "`Location` header names the execution.",
    responses={
        **STREAM_RESPONSE,
        **START_ERRORS,
        **errors({408: {"EXECUTION_TIMEOUT": "the run timed out; partial_result holds what it found"}}),
        **START_LIMITED,
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
    execution = await service.start_execution(
        session, manager, team_id, body, actor=principal.actor, api_key_id=principal.api_key_id
    )
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
    operation_id="submitExecution",
    summary="Start a team's execution in the background",
    description="Stores a `pending` execution of the team and answers it at once (202, with `Location`); the "
    "run goes on in a worker. Follow it with `GET /executions/{id}`, its events or its stream.",
    responses={**START_ERRORS, **START_LIMITED},
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
        session, context.executions, team_id, body, actor=principal.actor, api_key_id=principal.api_key_id
    )
    response.headers["Location"] = _location(execution.id)
    return service.execution_read(execution)


@router.get(
    "/teams/{team_id}/executions",
    response_model=Page[ExecutionRead],
    operation_id="listTeamExecutions",
    summary="List a team's executions",
    description="The team's executions, newest first, a page at a time; `status` keeps only those in that status.",
    responses=errors(TEAM_NOT_FOUND),
)
async def list_team_executions(
    team_id: uuid.UUID,
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    status: ExecutionStatus | None = None,
) -> Page[ExecutionRead]:
    return await service.list_team_executions(session, team_id, page, status=status)


@router.get(
    "/executions",
    response_model=Page[ExecutionRead],
    operation_id="listExecutions",
    summary="List executions of every team",
    description=(
        "Executions of all teams, newest first, optionally filtered by team, status and creation time "
        "(`created_after` <= created_at < `created_before`, timezone-aware ISO-8601)."
    ),
)
async def list_executions(
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    team_id: Annotated[uuid.UUID | None, Query(description="only this team's executions")] = None,
    status: Annotated[ExecutionStatus | None, Query(description="only executions in this status")] = None,
    created_after: Annotated[QueryDatetime | None, Query(description="created at or after this time")] = None,
    created_before: Annotated[QueryDatetime | None, Query(description="created before this time")] = None,
) -> Page[ExecutionRead]:
    return await service.list_executions(
        session, page, team_id=team_id, status=status, created_after=created_after, created_before=created_before
    )


@router.get(
    "/executions/{execution_id}",
    response_model=ExecutionRead,
    operation_id="getExecution",
    summary="Read an execution",
    description="Status, input, timings, the result (summary and each node team's findings), the structured "
    "output, token usage and cost, and the error of a run that did not succeed.",
    responses=errors(EXECUTION_NOT_FOUND),
)
async def get_execution(execution_id: uuid.UUID, _: ViewerDep, session: SessionDep) -> ExecutionRead:
    return service.execution_read(await service.get_execution_row(session, execution_id))


@router.get(
    "/executions/{execution_id}/events",
    response_model=Page[EventRead],
    operation_id="listExecutionEvents",
    summary="List an execution's stored events",
    description="The execution's events in `seq` order, a page at a time; `after` keeps only later ones. Each "
    "`data` is the payload the stream carried (see the `x-sse-events` schemas of `streamExecution`).",
    responses=errors(EXECUTION_NOT_FOUND),
)
async def list_execution_events(
    execution_id: uuid.UUID,
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="only events with a greater seq")] = 0,
) -> Page[EventRead]:
    return await service.list_events(session, execution_id, after, page)


@router.get(
    "/executions/{execution_id}/stream",
    operation_id="streamExecution",
    summary="Follow an execution's event stream",
    description="Replays every stored event after `Last-Event-ID` (or `after`), then continues live until the "
    "terminal event; nothing is lost across reconnects. A finished execution's stream replays and ends. "
    "Heartbeats (no id) come after 30 s of silence.",
    responses={**STREAM_RESPONSE, **errors(EXECUTION_NOT_FOUND)},
)
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
    operation_id="cancelExecution",
    summary="Cancel an execution",
    description="A pending run is cancelled at once; a running one has its model and tool calls abandoned "
    "promptly and ends `cancelled` (its stream ends with `execution_cancelled`).",
    responses={
        **errors(
            {
                **EXECUTION_NOT_FOUND,
                409: {
                    "EXECUTION_FINISHED": "the execution has already finished",
                    "EXECUTION_NOT_CANCELLABLE": "no process that can cancel it runs it",
                },
            }
        ),
        **RATE_LIMITED_RESPONSE,
    },
)
async def cancel_execution(
    execution_id: uuid.UUID, principal: ExecutionOperatorDep, session: SessionDep, context: ServiceContextDep
) -> ExecutionRead:
    execution = await service.cancel_execution(session, context.executions, execution_id, actor=principal.actor)
    return service.execution_read(execution)


@router.post(
    "/teams/{team_id}/structured-output",
    response_model=StructuredOutputResult,
    operation_id="createStructuredOutput",
    summary="Structured output from a finished run",
    description="Asks the team's global supervisor model to express a finished execution's findings (the "
    "given `execution_id`, else the team's latest finished one) as JSON matching `output_schema`, validating "
    "and repairing up to 3 times.",
    responses={
        **errors(
            {
                404: {"TEAM_NOT_FOUND": "", "EXECUTION_NOT_FOUND": "no such (finished) execution of this team"},
                409: {"EXECUTION_RUNNING": "the execution has not finished yet"},
                422: {
                    "VALIDATION_ERROR": "the body does not match the schema",
                    "SCHEMA_GENERATION_FAILED": "the output did not match output_schema after 3 attempts "
                    "(schema_validation and partial_output are next to the error body)",
                },
            }
        ),
        **RATE_LIMITED_RESPONSE,
    },
)
async def team_structured_output(
    team_id: uuid.UUID,
    body: StructuredOutputRequest,
    _: ExecutionOperatorDep,
    session: SessionDep,
    context: ServiceContextDep,
) -> StructuredOutputResult:
    return await service.structured_output(session, context.model_runtime, team_id, body)


@router.get(
    "/executions/{execution_id}/approvals",
    response_model=Page[ApprovalRead],
    operation_id="listExecutionApprovals",
    summary="List the tool calls of a run that need a person's approval",
    description=(
        "Every call of the run that waited (or waits) for approval, oldest first: the tool, its arguments (secrets "
        "redacted), its status (`pending`, `approved`, `rejected`, `cancelled`), who decided and when, and the "
        "deadline after which an undecided call is rejected."
    ),
    responses=errors(EXECUTION_NOT_FOUND),
)
async def list_execution_approvals(
    execution_id: uuid.UUID, _: ViewerDep, session: SessionDep, page: PageQuery
) -> Page[ApprovalRead]:
    return await service.list_approvals(session, execution_id, page)


@router.get(
    "/approvals",
    response_model=Page[ApprovalRead],
    operation_id="listApprovals",
    summary="List the tool calls of every run that need a person's approval",
    description=(
        "The inbox: the calls of every run that waited (or wait) for approval, the latest change first (its "
        "decision, else its request); `status=pending` for those that wait. Decide one with "
        "`POST /executions/{execution_id}/approvals/{approval_id}`."
    ),
)
async def list_approvals(
    _: ViewerDep,
    session: SessionDep,
    page: PageQuery,
    status: Annotated[ApprovalStatus | None, Query(description="only the calls in this state")] = None,
) -> Page[ApprovalRead]:
    return await service.list_all_approvals(session, page, status=status)


@router.post(
    "/executions/{execution_id}/approvals/{approval_id}",
    response_model=ApprovalRead,
    operation_id="decideExecutionApproval",
    summary="Approve or reject a tool call the run waits for",
    description=(
        "Records the decision (audited with who decided) and its `approval_resolved` event. Once no call of the run "
        "waits any more, the run resumes from its checkpoint on any worker: an approved call is made, a rejected "
        "one returns the rejection and the comment to the agent as the tool's result."
    ),
    responses=errors(
        {
            404: {"EXECUTION_NOT_FOUND": "no such execution", "APPROVAL_NOT_FOUND": "no such approval of this run"},
            409: {
                "APPROVAL_ALREADY_DECIDED": "someone decided already",
                "EXECUTION_NOT_AWAITING_APPROVAL": "the run was cancelled or finished",
            },
        }
    ),
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
