"""What a run produces: per-agent outputs, per-node results, and the outcome of the whole run."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiops_executor.engine.models import Usage


class NodeStatus(StrEnum):
    success = "success"
    failed = "failed"
    skipped = "skipped"
    timeout = "timeout"
    cancelled = "cancelled"


class RunStatus(StrEnum):
    success = "success"
    failed = "failed"
    timeout = "timeout"
    cancelled = "cancelled"


@dataclass
class AgentResult:
    agent_id: str
    output: str
    status: str = "success"  # "success" or "failed"
    error: str | None = None
    # What the turn's tool calls observed (``engine.evidence``); kept in the run's state, reported per node.
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"agent_id": self.agent_id, "output": self.output, "status": self.status}
        if self.error:
            body["error"] = self.error
        return body

    def state(self) -> dict[str, Any]:
        """The turn as the node team's state keeps it: with its evidence."""
        return {**self.as_dict(), "evidence": self.evidence}


@dataclass
class NodeResult:
    node_id: str
    status: NodeStatus
    output: str
    agents: list[AgentResult] = field(default_factory=list)
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    verdict: str = "unknown"
    evidence: list[dict[str, Any]] = field(default_factory=list)
    error_code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "node_id": self.node_id,
            "status": self.status.value,
            "output": self.output,
            "agents": [a.as_dict() for a in self.agents],
            "usage": self.usage.as_dict(),
            "verdict": self.verdict,
            "evidence": self.evidence,
        }
        if self.error:
            body["error"] = self.error
        if self.error_code:
            body["error_code"] = self.error_code
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> NodeResult:
        return cls(
            body["node_id"],
            NodeStatus(body["status"]),
            body["output"],
            [AgentResult(**a) for a in body["agents"]],
            body.get("error"),
            Usage.from_dict(body.get("usage")),
            body.get("verdict", "unknown"),
            list(body.get("evidence") or []),
            body.get("error_code"),
        )


@dataclass
class RunOutcome:
    status: RunStatus
    summary: str
    node_results: list[NodeResult]
    duration_ms: int
    usage: Usage = field(default_factory=Usage)
    structured_output: Any = None
    error_code: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] = field(default_factory=dict)

    # The global supervisor's own model calls; with the node teams' usages it adds up to ``usage``.
    supervisor_usage: Usage = field(default_factory=Usage)
    # The degraded or failed nodes, causes first (``engine.evidence.rank_suspects``).
    suspects: list[dict[str, Any]] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        """The contract's ``result`` object."""
        return {
            "summary": self.summary,
            "node_results": [n.as_dict() for n in self.node_results],
            "suspects": self.suspects,
            "supervisor_usage": self.supervisor_usage.as_dict(),
        }
