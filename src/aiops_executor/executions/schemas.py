"""Request and response bodies of the Executions API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from aiops_executor.core.json_types import JSON_INT
from aiops_executor.core.text import FREE_TEXT, SafeJson
from aiops_executor.engine.topology import MAX_TIMEOUT_SECONDS


class ExecutionStatus(StrEnum):
    pending = "pending"
    running = "running"
    awaiting_approval = "awaiting_approval"
    success = "success"
    failed = "failed"
    timeout = "timeout"
    cancelled = "cancelled"


class ApprovalStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    cancelled = "cancelled"  # its run was cancelled while it waited


UNFINISHED = (
    ExecutionStatus.pending.value,
    ExecutionStatus.running.value,
    ExecutionStatus.awaiting_approval.value,
)
# Event seqs are 64-bit SQL integers: a larger ``after`` / ``Last-Event-ID`` is refused, not sent to the database.
MAX_SEQ = 2**63 - 1


class ExecutionInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Annotated[str, StringConstraints(min_length=1, max_length=20_000), FREE_TEXT]
    context: SafeJson = Field(default_factory=dict)


class ExecutionRequest(BaseModel):
    """``POST /teams/{team_id}/executions``: runs in the background."""

    model_config = ConfigDict(extra="forbid")

    input: ExecutionInput
    timeout_seconds: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS), JSON_INT] | None = Field(
        default=None, description="default: the team's timeout_seconds"
    )
    output_schema: SafeJson | None = Field(default=None, description="JSON Schema of the structured result")


class ExecuteRequest(ExecutionRequest):
    """``POST /teams/{team_id}/execute``: streams the events, or waits for the result."""

    stream: StrictBool = True


class Usage(BaseModel):
    """Tokens and cost in USD; ``null`` is unknown (a provider did not report a count, or a price is missing)."""

    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cost: float | None = 0.0


class AgentOutput(BaseModel):
    agent_id: str
    output: str
    status: str = "success"
    error: str | None = None


Verdict = Literal["ok", "degraded", "failed", "unknown"]


class Evidence(BaseModel):
    seq: int | None = Field(description="the seq of the tool_call event (null when it is not known)")
    tool: str
    verdict: Verdict
    signals: list[str] = Field(description="what set the verdict, in short human strings")
    observed: bool = Field(
        default=True, description="the call observed the resource (false: refused by a policy, no target, ...)"
    )
    call_id: str | None = None
    error_code: str | None = Field(default=None, description="why an unknown call observed nothing")


class NodeOutput(BaseModel):
    node_id: str
    status: str
    output: str
    agents: list[AgentOutput] = Field(default_factory=list)
    error: str | None = None
    error_code: str | None = Field(default=None, description="NO_EVIDENCE: no tool call observed the resource")
    usage: Usage = Field(default_factory=Usage, description="this node team's model calls")
    verdict: Verdict = Field(default="unknown", description="the worst verdict of its evidence; unknown when none")
    evidence: list[Evidence] = Field(default_factory=list)


class Suspect(BaseModel):
    node_id: str
    rank: int = Field(description="1 is the likeliest cause: a failing node none of whose dependencies fails")
    verdict: Verdict
    reasons: list[str]
    evidence_seqs: list[int] = Field(description="the seqs of the tool_call events that found it degraded or failed")


class ExecutionResult(BaseModel):
    summary: str
    node_results: list[NodeOutput]
    suspects: list[Suspect] = Field(
        default_factory=list, description="the degraded or failed nodes, ranked from verdicts and topology, no model"
    )
    supervisor_usage: Usage = Field(
        default_factory=Usage,
        description="the global supervisor's own model calls; with the node results' usages it adds up to usage",
    )


class ExecutionRead(BaseModel):
    execution_id: uuid.UUID
    team_id: uuid.UUID
    status: ExecutionStatus
    input: dict[str, Any]
    timeout_seconds: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    result: ExecutionResult | None
    structured_output: Any | None = None
    usage: Usage
    error_code: str | None = None
    error_message: str | None = None
    attempt: int = Field(description="1, plus one for each time the run was resumed after its process was lost")
    worker_id: str | None = Field(description="the process running it (host:pid); null when none is")
    created_at: datetime
    updated_at: datetime


class EventRead(BaseModel):
    seq: int
    event: str
    data: dict[str, Any]


class StructuredOutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    execution_id: uuid.UUID | None = None
    output_schema: SafeJson
    include_raw_output: StrictBool = False


class SchemaValidation(BaseModel):
    valid: bool
    errors: list[dict[str, str]]


class StructuredOutputResult(BaseModel):
    team_id: uuid.UUID
    execution_id: uuid.UUID
    structured_output: Any
    schema_validation: SchemaValidation
    raw_output: str | None = None


class PurgeResult(BaseModel):
    executions: int
    events: int


# --------------------------------------------------------------------------------------------- stream events
# The ``data`` of each SSE event (contract: SSE events), for the OpenAPI document. Payloads are built by the
# engine and the repository; tests/service/test_openapi.py checks streamed events against these models field by field.


class LiveEventBase(BaseModel):
    """Live only: no SSE id and no seq; never stored, never replayed."""

    execution_id: uuid.UUID
    team_id: uuid.UUID
    timestamp: datetime


class EventBase(LiveEventBase):
    seq: int = Field(description="per-execution, gap-free, increasing; also the SSE id (heartbeats: the last seq)")


class NodeEventBase(EventBase):
    node_id: str


class SupervisorEventBase(EventBase):
    supervisor_id: str = Field(description="global_supervisor, or <node_id>.supervisor")


class AgentEventBase(NodeEventBase):
    agent_id: str


class ExecutionStartEvent(EventBase):
    input: dict[str, Any]
    started_at: datetime


class ExecutionResumedEvent(EventBase):
    attempt: int
    worker_id: str | None
    resumed_after_seq: int = Field(description="the last event of the earlier attempt")


class GlobalSupervisorMessageEvent(SupervisorEventBase):
    message: str


class GlobalSupervisorDecisionEvent(SupervisorEventBase):
    decision: str
    next_nodes: list[str]
    warning: str | None = Field(default=None, description="the supervisor carried on after a problem")


class NodeSupervisorMessageEvent(SupervisorEventBase):
    node_id: str
    message: str


class NodeSupervisorDecisionEvent(SupervisorEventBase):
    node_id: str
    decision: str
    next_agents: list[str]
    warning: str | None = None
    error: str | None = Field(default=None, description="the supervisor could not route; the node team fails")


class AgentMessageEvent(AgentEventBase):
    message: str
    status: str = Field(description="success or failed")
    error: str | None = None


class AgentTokenEvent(LiveEventBase):
    """Coalesced token deltas of an agent's model call (at most one per agent per 100 ms); live only."""

    node_id: str
    agent_id: str
    delta: str


class AgentTokensDiscardedEvent(LiveEventBase):
    """The agent's model call starts again (on another endpoint): the text its deltas built since the call
    began is void. Live only."""

    node_id: str
    agent_id: str
    discarded_tokens: int = Field(description="how many token deltas the failed attempt had streamed")
    endpoint: str | None
    reason: str


class ToolCallEvent(AgentEventBase):
    tool: str
    input: dict[str, Any]
    output: dict[str, Any]
    status: str
    duration_ms: float
    call_id: str = Field(description="the call's id, which the evidence of node results names")
    verdict: Verdict = Field(description="what the call observed of its target; unknown when it could not observe")
    signals: list[str]


class NodeCompleteEvent(NodeEventBase):
    status: str
    result: NodeOutput
    usage: Usage


class ExecutionEndEvent(EventBase):
    status: ExecutionStatus
    duration_ms: int | None = None
    result: ExecutionResult | None = None
    usage: Usage | None = None


class ExecutionCompleteEvent(ExecutionEndEvent):
    structured_output: Any | None = Field(default=None, description="when the run had an output_schema")


class ExecutionErrorEvent(ExecutionEndEvent):
    error_code: str | None
    error_message: str | None
    node_id: str | None = None
    agent_id: str | None = None
    structured_output: Any | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="SCHEMA_GENERATION_FAILED: what failed")
    partial_output: Any | None = Field(default=None, description="SCHEMA_GENERATION_FAILED: the last attempt")
    budget_id: uuid.UUID | None = Field(default=None, description="BUDGET_EXCEEDED: the budget that ran out")
    scope: str | None = Field(default=None, description="BUDGET_EXCEEDED: team, api_key, provider or global")
    scope_id: uuid.UUID | None = None
    period: str | None = None
    limit_usd: float | None = None
    limit_tokens: int | None = None
    spent_usd: float | None = None
    spent_tokens: int | None = None
    resets_at: datetime | None = Field(default=None, description="BUDGET_EXCEEDED: when the budget resets")


class ExecutionCancelledEvent(ExecutionEndEvent):
    pass


class HeartbeatEvent(EventBase):
    pass


class ApprovalEventBase(EventBase):
    node_id: str | None
    agent_id: str | None
    approval_id: uuid.UUID = Field(description="decide it with POST /executions/{id}/approvals/{approval_id}")
    tool: str


class ApprovalRequestedEvent(ApprovalEventBase):
    input: dict[str, Any] = Field(description="the call's arguments, secrets redacted")


class ApprovalResolvedEvent(ApprovalEventBase):
    decision: Literal["approve", "reject"]
    decided_by: str = Field(description="who decided; `system:timeout` for a call rejected by its deadline")
    comment: str | None


class BudgetWarningEvent(EventBase):
    budget_id: uuid.UUID
    spent_usd: float = Field(description="what the budget's period has spent, USD")
    limit_usd: float | None = Field(description="the budget's hard limit, USD (null: it limits tokens only)")
    spent_tokens: int
    limit_tokens: int | None


STREAM_EVENTS: dict[str, type[BaseModel]] = {
    "execution_start": ExecutionStartEvent,
    "execution_resumed": ExecutionResumedEvent,
    "global_supervisor_message": GlobalSupervisorMessageEvent,
    "global_supervisor_decision": GlobalSupervisorDecisionEvent,
    "node_supervisor_message": NodeSupervisorMessageEvent,
    "node_supervisor_decision": NodeSupervisorDecisionEvent,
    "agent_message": AgentMessageEvent,
    "agent_token": AgentTokenEvent,
    "agent_tokens_discarded": AgentTokensDiscardedEvent,
    "tool_call": ToolCallEvent,
    "node_complete": NodeCompleteEvent,
    "execution_complete": ExecutionCompleteEvent,
    "execution_error": ExecutionErrorEvent,
    "execution_cancelled": ExecutionCancelledEvent,
    "approval_requested": ApprovalRequestedEvent,
    "approval_resolved": ApprovalResolvedEvent,
    "budget_warning": BudgetWarningEvent,
    "heartbeat": HeartbeatEvent,
}


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: Annotated[str, StringConstraints(max_length=2000), FREE_TEXT] | None = Field(
        default=None, description="handed to the agent with a rejection; kept with the decision"
    )


class ApprovalRead(BaseModel):
    approval_id: uuid.UUID
    execution_id: uuid.UUID
    tool: str
    input: dict[str, Any] = Field(description="the call's arguments, secrets redacted")
    node_id: str | None
    agent_id: str | None
    status: ApprovalStatus
    decided_by: str | None = Field(description="who decided; `system:timeout` for a call rejected by its deadline")
    comment: str | None
    decided_at: datetime | None
    expires_at: datetime = Field(description="undecided by then, the call is rejected")
    created_at: datetime
