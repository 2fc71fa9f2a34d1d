"""The event model of a run (contract: SSE events). The engine emits them; executions persist and stream them.

Ids follow the contract: node-level events carry ``node_id``; supervisor events carry ``supervisor_id``
(``global_supervisor`` or ``<node_id>.supervisor``); agent and tool events carry ``agent_id``.
``seq`` and ``timestamp`` are stamped in the order events leave the run, so ``seq`` is gap-free over the stored
events. Live events (``agent_token``, ``agent_tokens_discarded``) are never stored: they take no ``seq`` of their
own and carry, in ``seq``, the one of the stored event they follow, so that a stream can tell where they belong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from langgraph.config import get_stream_writer

GLOBAL_SUPERVISOR_ID = "global_supervisor"


def node_supervisor_id(node_id: str) -> str:
    return f"{node_id}.supervisor"


class EventType(StrEnum):
    execution_start = "execution_start"
    global_supervisor_message = "global_supervisor_message"
    global_supervisor_decision = "global_supervisor_decision"
    node_supervisor_message = "node_supervisor_message"
    node_supervisor_decision = "node_supervisor_decision"
    agent_message = "agent_message"
    agent_token = "agent_token"  # noqa: S105 (an event name, not a secret)
    agent_tokens_discarded = "agent_tokens_discarded"
    tool_call = "tool_call"
    node_complete = "node_complete"
    execution_complete = "execution_complete"
    execution_error = "execution_error"
    execution_cancelled = "execution_cancelled"
    execution_resumed = "execution_resumed"
    approval_requested = "approval_requested"
    approval_resolved = "approval_resolved"
    budget_warning = "budget_warning"
    heartbeat = "heartbeat"


TERMINAL_EVENTS = frozenset({EventType.execution_complete, EventType.execution_error, EventType.execution_cancelled})
# Shown while they happen, never stored or replayed: the complete ``agent_message`` has what they built.
LIVE_EVENTS = frozenset({EventType.agent_token, EventType.agent_tokens_discarded})


@dataclass(frozen=True)
class ExecutionEvent:
    type: EventType
    execution_id: str
    team_id: str
    seq: int
    timestamp: datetime
    node_id: str | None = None
    agent_id: str | None = None
    supervisor_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @property
    def is_live(self) -> bool:
        """Never stored: ``seq`` is the stored event's it follows, and the payload has none."""
        return self.type in LIVE_EVENTS

    def payload(self) -> dict[str, Any]:
        """The JSON object of the SSE ``data:`` line: the common fields, the ids present, then the extras."""
        body: dict[str, Any] = {"execution_id": self.execution_id, "team_id": self.team_id}
        if not self.is_live:
            body["seq"] = self.seq
        body["timestamp"] = format_timestamp(self.timestamp)
        for key in ("node_id", "agent_id", "supervisor_id"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body.update(self.data)
        return body


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PendingEvent:
    """An event as emitted inside the graph, before the run stamps it with its sequence number."""

    type: EventType
    node_id: str | None = None
    agent_id: str | None = None
    supervisor_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def announce(event: PendingEvent) -> None:
    """Sends an event of the run from inside one of its steps, where the step is not the one speaking (a model
    call's budget crossing its soft limit); outside a run it goes nowhere."""
    try:
        writer = get_stream_writer()
    except RuntimeError:  # not inside a run's graph
        return
    writer(event)
