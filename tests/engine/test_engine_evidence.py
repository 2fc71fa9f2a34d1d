"""Evidence in a run's result: each tool call's verdict, node verdicts with evidence pointing at their tool_call
events, NO_EVIDENCE when no call observed the resource, and the ranked suspects in execution_complete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from aiops_executor.engine import NodeStatus, RunStatus
from aiops_executor.engine.events import EventType
from aiops_executor.tools.registry import ToolContext, ToolError, ToolRegistry, ToolSpec
from tests.engine_support import ProbeArgs, agent, default_checkpointer, edge, node, of_type, run_team, team


@pytest.fixture(autouse=True)
def _on_each_checkpointer(checkpointer: BaseCheckpointSaver[Any]) -> Iterator[None]:
    token = default_checkpointer.set(checkpointer)
    yield
    default_checkpointer.reset(token)


def registry_observing(states: dict[str, tuple[str, str]]) -> ToolRegistry:
    """``probe`` reports the state ``states[node_id]`` gives (verdict, signal); a node not listed is refused by
    a policy of ours (``EGRESS_DENIED``): nothing of it is observed."""

    async def probe(args: ProbeArgs, context: ToolContext) -> dict[str, Any]:
        if context.node_id not in states:
            raise ToolError("EGRESS_DENIED", f"egress denied: {args.url} is not allowed")
        verdict, signal = states[context.node_id]
        return {"url": args.url, "verdict": verdict, "signals": [signal]}

    registry = ToolRegistry()
    registry.register(ToolSpec("probe", "Probe a URL.", ProbeArgs, probe))
    return registry


async def test_tool_calls_carry_verdicts_and_nodes_point_at_them() -> None:
    spec = team([node("db"), node("web")], [edge("web", "db")])
    states = {"db": ("failed", "connection refused"), "web": ("degraded", "HTTP 503 from /")}
    run, events = await run_team(spec, registry=registry_observing(states))

    assert run.outcome is not None and run.outcome.status is RunStatus.success
    calls = {e.node_id: e for e in of_type(events, EventType.tool_call)}
    assert calls["db"].data["verdict"] == "failed" and calls["db"].data["signals"] == ["connection refused"]
    assert calls["web"].data["verdict"] == "degraded"

    results = {n.node_id: n for n in run.outcome.node_results}
    # A probe that finds its resource down is a finding: the node team did its work.
    assert results["db"].status is NodeStatus.success and results["db"].verdict == "failed"
    assert results["db"].evidence == [
        {
            "call_id": calls["db"].data["call_id"],
            "tool": "probe",
            "verdict": "failed",
            "signals": ["connection refused"],
            "observed": True,
            "seq": calls["db"].seq,
        }
    ]
    # node_complete carries the same evidence, with the seq of the call it points at.
    completed = {e.node_id: e for e in of_type(events, EventType.node_complete)}
    assert completed["web"].data["result"]["evidence"][0]["seq"] == calls["web"].seq
    assert completed["web"].data["result"]["verdict"] == "degraded"

    # The cause before its symptom, in the terminal event too.
    (end,) = of_type(events, EventType.execution_complete)
    suspects = end.data["result"]["suspects"]
    assert [(s["node_id"], s["rank"], s["verdict"]) for s in suspects] == [("db", 1, "failed"), ("web", 2, "degraded")]
    assert suspects[0]["evidence_seqs"] == [calls["db"].seq]
    assert suspects[1]["reasons"][0] == "depends on db, which is failed"


async def test_a_node_whose_calls_observed_nothing_fails_with_no_evidence() -> None:
    # Every call of "web" is refused by the egress policy: the model's words alone are not evidence.
    spec = team([node("db"), node("web", [agent("a1"), agent("a2")])], [edge("web", "db")], strategy="parallel")
    run, events = await run_team(spec, registry=registry_observing({"db": ("ok", "HTTP 200")}))

    assert run.outcome is not None
    results = {n.node_id: n for n in run.outcome.node_results}
    web = results["web"]
    assert web.status is NodeStatus.failed and web.error_code == "NO_EVIDENCE"
    assert web.error == "no tool call observed the resource (EGRESS_DENIED x2)"
    assert web.verdict == "unknown"
    assert [item["error_code"] for item in web.evidence] == ["EGRESS_DENIED", "EGRESS_DENIED"]
    assert results["db"].status is NodeStatus.success and results["db"].verdict == "ok"
    assert run.outcome.suspects == []
    calls = [e for e in of_type(events, EventType.tool_call) if e.node_id == "web"]
    assert {e.data["verdict"] for e in calls} == {"unknown"}


async def test_a_run_where_no_call_observed_anything_fails() -> None:
    spec = team([node("db"), node("web")], [edge("web", "db")], strategy="parallel")
    run, events = await run_team(spec, registry=registry_observing({}))

    assert run.outcome is not None and run.outcome.status is RunStatus.failed
    assert run.outcome.error_message is not None
    assert "every node team failed" in run.outcome.error_message
    assert "EGRESS_DENIED x1" in run.outcome.error_message
    assert of_type(events, EventType.execution_error)


async def test_a_node_without_tools_needs_no_evidence() -> None:
    spec = team([node("notes", [agent("a1", tools=())])])
    run, _ = await run_team(spec, registry=registry_observing({}))

    assert run.outcome is not None and run.outcome.status is RunStatus.success
    (result,) = run.outcome.node_results
    assert result.status is NodeStatus.success and result.verdict == "unknown" and result.evidence == []


async def test_the_global_supervisor_reads_the_ranking() -> None:
    spec = team([node("db"), node("web")], [edge("web", "db")])
    states = {"db": ("failed", "connection refused"), "web": ("failed", "HTTP 502 from /")}
    run, _ = await run_team(spec, registry=registry_observing(states))

    assert run.outcome is not None
    # The simulator's summary repeats what it was told: the ranking is among it.
    assert "Ranked suspects" in run.outcome.summary
    assert "1. db (failed)" in run.outcome.summary
