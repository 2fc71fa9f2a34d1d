"""Approvals: a tool call that needs a person's decision pauses the run with a LangGraph interrupt.

How a pause and its resume work (LangGraph 1.x semantics, checked by tests/executions/test_approvals.py):

- The tool's wrapper (``CompiledTeam.tool``) calls ``interrupt(request)`` before the call. The interrupt
  bubbles up through the agent graph, the node team's turn and the node team (``GraphBubbleUp`` is never
  caught as a failure) to the run, whose graph stops with the interrupt in its checkpoint. Node teams running
  at the same time finish their step, and what they finished is checkpointed with it.
- The run then ends its attempt without a terminal event: one ``approval_requested`` event per waiting call,
  status ``awaiting_approval``, no process holding it.
- Once every waiting call is decided the run is resumed, on any worker, with
  ``Command(resume={interrupt_id: decision})``. LangGraph re-executes the tasks that were interrupted, from
  their beginning, and nothing else: finished node teams are not run again, and neither are the node team's
  finished turns (each turn is a checkpointed step). The interrupted turn itself is re-executed: its node
  supervisor decides again (round_robin and priority pick the same agent with no model call; adaptive makes one
  more routing call, and its decision event appears again). An agent that may pause is checkpointed (when it
  stops), so it continues where it was: its model calls and the tool calls it had finished are not made again;
  only the waiting call's wrapper runs again, and its ``interrupt`` now returns the decision.
- Approved: the call runs. Rejected (by a person, or after ``AIOPS_APPROVAL_TIMEOUT_SECONDS``): the agent gets
  the rejection and the comment as the tool's result (``error_code`` ``APPROVAL_REJECTED``), and goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

APPROVAL_MARKER = "aiops_approval"
APPROVAL_REJECTED = "APPROVAL_REJECTED"
# Approval ids are derived from the run and the interrupt (stable across re-executions of the same call).
_NAMESPACE = uuid.UUID("8f0f5b7e-6f0e-4a43-9f4a-3c2a1d6f0b55")


def approval_id(execution_id: str, interrupt_id: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{execution_id}:{interrupt_id}")


@dataclass(frozen=True)
class PendingApproval:
    """A tool call the run waits on."""

    approval_id: uuid.UUID
    interrupt_id: str
    tool: str
    input: dict[str, Any]
    node_id: str | None
    agent_id: str | None


def pending_from(execution_id: str, interrupt_id: str, value: Any) -> PendingApproval | None:
    """The approval an interrupt asks for; None for an interrupt that is not one."""
    if not isinstance(value, Mapping) or not value.get(APPROVAL_MARKER):
        return None
    return PendingApproval(
        approval_id=approval_id(execution_id, interrupt_id),
        interrupt_id=interrupt_id,
        tool=str(value.get("tool", "")),
        input=dict(value.get("input") or {}),
        node_id=value.get("node_id"),
        agent_id=value.get("agent_id"),
    )


def decision_value(decision: str, decided_by: str | None, comment: str | None) -> dict[str, Any]:
    """What the waiting call's ``interrupt`` returns on resume."""
    return {"decision": decision, "decided_by": decided_by, "comment": comment}


def rejection_output(tool: str, answer: Any) -> dict[str, Any] | None:
    """None when the call was approved; else the tool result the agent reads instead of the call's."""
    if isinstance(answer, Mapping) and answer.get("decision") == "approve":
        return None
    decided_by = answer.get("decided_by") if isinstance(answer, Mapping) else None
    comment = answer.get("comment") if isinstance(answer, Mapping) else None
    message = f"the call of {tool} was rejected" + (f" by {decided_by}" if decided_by else "")
    if comment:
        message += f": {comment}"
    return {"error_code": APPROVAL_REJECTED, "error_message": message, "comment": comment, "decided_by": decided_by}
