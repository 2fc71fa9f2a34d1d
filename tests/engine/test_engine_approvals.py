"""The engine's side of approvals: a tool call that needs one pauses the run with a LangGraph interrupt, and the
run resumes from its checkpoint with the decision, on every checkpointer, without repeating finished work."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from aiops_executor.engine import CompiledTeam, ExecutionRun, Resume, RunRequest, RunStatus
from aiops_executor.engine.approvals import approval_id, decision_value
from tests.engine_support import SimulatorSource, agent, node, of_type, team, tool_registry


def _run(
    spec: Any, registry: Any, checkpointer: BaseCheckpointSaver[Any], execution_id: str, **kw: Any
) -> ExecutionRun:
    return ExecutionRun(
        CompiledTeam(spec, registry),
        RunRequest(execution_id, "team-1", "restart what is broken"),
        SimulatorSource(),
        checkpointer=checkpointer,
        **kw,
    )


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_call_waits_for_approval_and_resumes_with_the_decision(
    checkpointer: BaseCheckpointSaver[Any], decision: str
) -> None:
    calls: Counter[str] = Counter()
    registry = tool_registry(calls=calls)
    spec = team(
        [
            node("web", [agent("fixer", ["probe", "rendezvous"], approval_required_tools=["probe"])]),
            node("db", [agent("reader")]),
        ],
        strategy="parallel",
    )
    execution_id = f"exec-{uuid.uuid4().hex}"
    first = _run(spec, registry, checkpointer, execution_id)
    events = [e async for e in first.events()]
    assert first.outcome is None and len(first.awaiting) == 1
    waiting = first.awaiting[0]
    assert waiting.tool == "probe" and waiting.node_id == "web" and waiting.agent_id == "fixer"
    assert waiting.input == {"url": "http://web.internal/health"}
    assert waiting.approval_id == approval_id(execution_id, waiting.interrupt_id)
    requested = of_type(events, "approval_requested")
    assert [e.data["approval_id"] for e in requested] == [str(waiting.approval_id)]
    assert not of_type(events, "execution_complete") and not of_type(events, "execution_error")
    # The node team that needed no approval finished; the waiting call was not made.
    assert calls == Counter({"db": 1})
    assert [e.node_id for e in of_type(events, "node_complete")] == ["db"]

    value = decision_value(decision, "alice", "not during the sale")
    resume = Resume(2, "w2", events[-1].seq, {}, decisions={waiting.interrupt_id: value})
    second = _run(spec, registry, checkpointer, execution_id, resume=resume)
    more = [e async for e in second.events()]
    assert second.outcome is not None and second.outcome.status is RunStatus.success
    stored = [e.seq for e in more if not e.is_live]
    assert stored == list(range(events[-1].seq + 1, events[-1].seq + 1 + len(stored)))
    # Nothing finished is run again: db's node team, the rendezvous call made before the pause.
    assert [e.node_id for e in of_type(more, "node_complete")] == ["web"]
    probe = [e.data for e in of_type(more, "tool_call") if e.data["tool"] == "probe"]
    assert len(probe) == 1
    if decision == "approve":
        assert probe[0]["status"] == "success" and calls == Counter({"db": 1, "web": 1})
    else:
        assert probe[0]["status"] == "error" and calls == Counter({"db": 1})
        assert probe[0]["output"]["error_code"] == "APPROVAL_REJECTED"
        assert "rejected by alice: not during the sale" in probe[0]["output"]["error_message"]
    agent_turns = [e for e in of_type(events + more, "agent_message") if e.agent_id == "fixer"]
    assert len(agent_turns) == 1
    # The other call of the same model turn had finished before the pause: it is not made again on resume.
    assert [e.data["tool"] for e in of_type(events, "tool_call") if e.node_id == "web"] == ["rendezvous"]
    assert [e.data["tool"] for e in of_type(more, "tool_call")] == ["probe"]


async def test_a_server_wide_approval_flag_pauses_every_agent_using_its_tools(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    from dataclasses import replace

    registry = tool_registry()
    probe = registry.get("probe")
    assert probe is not None
    flagged = registry.extended([replace(probe, name="k8s.probe", approval_required=True, server="k8s")])
    spec = team([node("web", [agent("a", ["k8s.probe"])])])
    run = _run(spec, flagged, checkpointer, f"exec-{uuid.uuid4().hex}")
    [e async for e in run.events()]
    assert [w.tool for w in run.awaiting] == ["k8s.probe"]
