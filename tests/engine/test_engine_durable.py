"""Durable runs in the engine: an attempt lost mid-run resumes from its checkpoint, on every checkpointer.

A lost process is simulated by abandoning the event stream (the graph task is cancelled and nothing is
concluded), which leaves the checkpointer exactly as a kill -9 would: what was stored stays, nothing else.
The real kill -9 of a ``serve`` process is in test_durable_runs.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from aiops_executor.engine import CompiledTeam, ExecutionEvent, ExecutionRun, NodeStatus, Resume, RunRequest, RunStatus
from aiops_executor.engine.events import EventType
from aiops_executor.engine.models import Usage
from tests.engine_support import SimulatorSource, agent, edge, node, of_type, team, tool_registry


async def _events_until(run: ExecutionRun, stop: Any) -> list[ExecutionEvent]:
    """Consumes events until ``stop(event)``; then the attempt is abandoned as a dead process would leave it."""
    seen: list[ExecutionEvent] = []
    stream = run.events()
    async for event in stream:
        seen.append(event)
        if stop(event):
            break
    await asyncio.sleep(0.2)  # the finished step's writes reach the checkpointer (sync durability)
    await stream.aclose()
    return seen


def _attempt(
    spec: Any, execution_id: str, checkpointer: BaseCheckpointSaver[Any], calls: Counter[str], **kwargs: Any
) -> ExecutionRun:
    delays = kwargs.pop("delays", {})
    resume = kwargs.pop("resume", None)
    barrier = kwargs.pop("barrier", None)
    return ExecutionRun(
        CompiledTeam(spec, tool_registry(barrier, delays=delays, calls=calls)),
        RunRequest(execution_id, "team-1", "Why is checkout slow?", timeout_seconds=30),
        SimulatorSource(),
        checkpointer=checkpointer,
        resume=resume,
    )


def _completed(events: list[ExecutionEvent]) -> set[str]:
    return {e.node_id for e in of_type(events, EventType.node_complete) if e.node_id}


async def test_a_resumed_run_skips_finished_node_teams_and_continues_the_event_log(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    # db and cache finish quickly; checkout (after db) and slow are still working when the process is lost.
    spec = team(
        [node("checkout"), node("db"), node("cache"), node("slow")],
        [edge("checkout", "db")],
    )
    execution_id = f"exec-{id(checkpointer)}-{asyncio.get_running_loop().time()}"
    first_calls: Counter[str] = Counter()
    first = _attempt(spec, execution_id, checkpointer, first_calls, delays={"checkout": 5, "slow": 5})
    completed: set[str] = set()

    def quick_ones_done(event: ExecutionEvent) -> bool:
        completed.update(_completed([event]))
        return completed >= {"db", "cache"}

    seen = await _events_until(first, quick_ones_done)
    finished_before = _completed(seen)
    assert finished_before == {"db", "cache"}
    assert first.outcome is None

    calls: Counter[str] = Counter()
    resumed = _attempt(
        spec,
        execution_id,
        checkpointer,
        calls,
        resume=Resume(attempt=2, worker_id="host:2", after_seq=seen[-1].seq),
    )
    events = [e async for e in resumed.events()]

    assert events[0].type == EventType.execution_resumed
    assert events[0].data == {"attempt": 2, "worker_id": "host:2", "resumed_after_seq": seen[-1].seq}
    stored = [e.seq for e in seen + events if not e.is_live]
    assert stored == list(range(1, len(stored) + 1))
    # Node teams that had finished make no tool call and emit no event again.
    for node_id in finished_before:
        assert calls[node_id] == 0
        assert not [e for e in events if e.node_id == node_id]
    assert resumed.outcome is not None and resumed.outcome.status is RunStatus.success
    statuses = {n.node_id: n.status for n in resumed.outcome.node_results}
    assert statuses == dict.fromkeys(("checkout", "db", "cache", "slow"), NodeStatus.success)
    # The result includes what the finished node teams found before the process was lost.
    outputs = {n.node_id: n.output for n in resumed.outcome.node_results}
    assert all(outputs[n] for n in finished_before)


async def test_an_interrupted_node_team_resumes_after_its_last_finished_agent_turn(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    # One node team of two agents: the first finishes, the second is working when the process is lost.
    agents = [agent("first", tools=("probe",)), agent("second", tools=("rendezvous",))]
    spec = team([node("db", agents)])
    execution_id = f"exec-turns-{id(checkpointer)}-{asyncio.get_running_loop().time()}"
    first_calls: Counter[str] = Counter()
    # The second agent's tool waits for a party that never comes: it is in flight when the process is lost.
    first = _attempt(spec, execution_id, checkpointer, first_calls, barrier=asyncio.Barrier(2))
    seen = await _events_until(first, lambda e: e.type == EventType.agent_message and e.agent_id == "first")
    agent_messages = [e.agent_id for e in of_type(seen, EventType.agent_message)]
    assert agent_messages == ["first"]

    calls: Counter[str] = Counter()
    resumed = _attempt(
        spec,
        execution_id,
        checkpointer,
        calls,
        barrier=asyncio.Barrier(1),
        resume=Resume(attempt=2, worker_id=None, after_seq=seen[-1].seq),
    )
    events = [e async for e in resumed.events()]
    # Only the second agent runs; the first agent's turn (and its probe) is taken from the checkpoint.
    assert [e.agent_id for e in of_type(events, EventType.agent_message)] == ["second"]
    assert calls["db"] == 0
    assert [e.data["tool"] for e in of_type(events, EventType.tool_call)] == ["rendezvous"]
    assert resumed.outcome is not None and resumed.outcome.status is RunStatus.success
    db = resumed.outcome.node_results[0]
    assert [a.agent_id for a in db.agents] == ["first", "second"]


@pytest.mark.parametrize("checkpointer", ["memory"], indirect=True)
async def test_a_node_team_announced_before_its_checkpoint_was_written_is_not_run_again(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    # The crash window: the process announced db's node_complete (stored, seen by clients) and died before
    # the step's checkpoint was committed. The resumed attempt finds no checkpoint of db, only the event.
    spec = team([node("db"), node("cache")])
    execution_id = f"exec-announced-{asyncio.get_running_loop().time()}"
    calls: Counter[str] = Counter()
    first = _attempt(spec, execution_id, InMemorySaver(), calls)
    seen = await _events_until(first, lambda e: e.type == EventType.node_complete and e.node_id == "db")
    announced = {e.node_id: e.data["result"] for e in of_type(seen, EventType.node_complete) if e.node_id}
    assert set(announced) >= {"db"}

    resumed_calls: Counter[str] = Counter()
    resumed = _attempt(
        spec,
        execution_id,
        checkpointer,  # knows nothing of the first attempt
        resumed_calls,
        resume=Resume(attempt=2, worker_id="host:1", after_seq=seen[-1].seq, announced=announced),
    )
    events = [e async for e in resumed.events()]
    for node_id in announced:
        assert resumed_calls[node_id] == 0
        assert not [e for e in events if e.node_id == node_id]
    assert resumed.outcome is not None and resumed.outcome.status is RunStatus.success
    results = {n.node_id: n for n in resumed.outcome.node_results}
    assert results["db"].output == announced["db"]["output"] and results["db"].status is NodeStatus.success
    assert set(results) == {"db", "cache"}


async def test_resuming_a_run_that_had_finished_its_graph_only_concludes_it(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    spec = team([node("db")])
    execution_id = f"exec-done-{id(checkpointer)}-{asyncio.get_running_loop().time()}"
    calls: Counter[str] = Counter()
    first = _attempt(spec, execution_id, checkpointer, calls)
    seen = await _events_until(first, lambda e: e.type == EventType.global_supervisor_message)
    assert calls["db"] == 1

    resumed = _attempt(
        spec, execution_id, checkpointer, calls, resume=Resume(attempt=2, worker_id=None, after_seq=seen[-1].seq)
    )
    events = [e async for e in resumed.events()]
    assert [e.type for e in events] == [EventType.execution_resumed, EventType.execution_complete]
    assert calls["db"] == 1
    assert resumed.outcome is not None and resumed.outcome.summary.startswith("[simulator]")


async def test_an_attempt_after_one_that_stored_nothing_starts_the_run(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    """The process died between taking the run and storing its first event: no client saw it start, so the next
    attempt's first event is ``execution_start`` (seq 1), not a resume of nothing."""
    spec = team([node("db")])
    calls: Counter[str] = Counter()
    resumed = _attempt(
        spec, "exec-unstored", checkpointer, calls, resume=Resume(attempt=2, worker_id="host:1", after_seq=0)
    )
    events = [e async for e in resumed.events()]
    assert (events[0].type, events[0].seq) == (EventType.execution_start, 1)
    assert [e.type for e in events].count(EventType.execution_resumed) == 0
    assert events[-1].type == EventType.execution_complete and calls["db"] == 1


@pytest.mark.parametrize("checkpointer", ["memory"], indirect=True)
async def test_dataflow_starts_a_dependent_as_soon_as_its_dependencies_finish(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    # Z is slow and independent; A -> B is a fast chain (B depends on A). Level by level, B would wait for Z.
    spec = team([node("z"), node("a"), node("b")], [edge("b", "a")])
    calls: Counter[str] = Counter()
    run = _attempt(spec, "exec-dataflow", checkpointer, calls, delays={"z": 3.0})
    loop = asyncio.get_running_loop()
    started = loop.time()
    at: dict[tuple[str, str], float] = {}
    async for event in run.events():
        if event.node_id and (event.node_id, event.type) not in at:
            at[(event.node_id, event.type)] = loop.time() - started
    assert at[("b", EventType.node_complete)] < 1.5
    assert at[("z", EventType.node_complete)] >= 3.0
    first_b = min(t for (node_id, _), t in at.items() if node_id == "b")
    assert first_b >= at[("a", EventType.node_complete)]


async def test_usage_per_node_team_adds_up_to_the_run(checkpointer: BaseCheckpointSaver[Any]) -> None:
    spec = team([node("db"), node("cache", [agent("a1"), agent("a2")])])
    run = ExecutionRun(
        CompiledTeam(spec, tool_registry()),
        RunRequest(f"exec-usage-{id(checkpointer)}", "team-1", "task"),
        _MeteredSource(),
        checkpointer=checkpointer,
    )
    events = [e async for e in run.events()]
    outcome = run.outcome
    assert outcome is not None and outcome.status is RunStatus.success
    per_node = {n.node_id: n.usage for n in outcome.node_results}
    # Every model call reports 10 input and 2 output tokens at 0.001 USD.
    assert per_node["db"].input_tokens and per_node["cache"].input_tokens
    assert per_node["cache"].input_tokens > per_node["db"].input_tokens  # two agents
    total = outcome.supervisor_usage
    for usage in per_node.values():
        total = total + usage
    assert total == outcome.usage
    assert outcome.usage.input_tokens == 10 * _MeteredSource.calls
    completes = {e.node_id: e.data["usage"] for e in of_type(events, EventType.node_complete)}
    assert completes["db"] == per_node["db"].as_dict()


async def test_a_count_the_provider_did_not_report_is_unknown_not_zero(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    spec = team([node("db")])
    run = ExecutionRun(
        CompiledTeam(spec, tool_registry()),
        RunRequest(f"exec-unknown-{id(checkpointer)}", "team-1", "task"),
        _MeteredSource(unreported=True),
        checkpointer=checkpointer,
    )
    [e async for e in run.events()]
    assert run.outcome is not None
    assert run.outcome.usage.input_tokens is None and run.outcome.usage.cost is None
    assert run.outcome.usage.as_dict() == {"input_tokens": None, "output_tokens": None, "cost": None}


class _MeteredSource(SimulatorSource):
    """The simulator, reporting each call's usage as a model source must (see engine.models.report_usage)."""

    calls = 0

    def __init__(self, unreported: bool = False) -> None:
        super().__init__()
        self.unreported = unreported
        type(self).calls = 0

    async def chat_model(self, provider: str, model_id: str, overrides: dict[str, Any]) -> Any:
        from decimal import Decimal

        from langchain_core.callbacks import AsyncCallbackHandler

        from aiops_executor.engine.models import report_usage

        unreported = self.unreported
        source_type = type(self)

        class Report(AsyncCallbackHandler):
            async def on_llm_end(self, response: Any, **kwargs: Any) -> None:
                source_type.calls += 1
                if unreported:
                    report_usage(Usage(None, None, None))
                else:
                    report_usage(Usage(10, 2, Decimal("0.001")))

        model = await super().chat_model(provider, model_id, overrides)
        model.callbacks = [Report()]
        return model


async def test_langgraph_control_flow_is_not_taken_for_an_agent_failure(
    checkpointer: BaseCheckpointSaver[Any],
) -> None:
    """An interrupt raised inside an agent's tool bubbles up through the engine's error handling: the agent is
    not reported failed with the interrupt as its error, and the run does not claim success."""
    from langgraph.errors import GraphInterrupt

    from aiops_executor.tools.registry import ToolContext, ToolRegistry, ToolSpec
    from tests.engine_support import ProbeArgs

    async def ask(args: ProbeArgs, context: ToolContext) -> dict[str, Any]:
        raise GraphInterrupt(())

    registry = ToolRegistry()
    registry.register(ToolSpec("probe", "Asks a person.", ProbeArgs, ask))
    # checkout depends on db: it must not wait (until the timeout) for a node team that is paused.
    spec = team([node("db"), node("checkout")], [edge("checkout", "db")])
    run = ExecutionRun(
        CompiledTeam(spec, registry),
        RunRequest(f"exec-interrupt-{id(checkpointer)}", "team-1", "task", timeout_seconds=20),
        SimulatorSource(),
        checkpointer=checkpointer,
    )
    events = [e async for e in run.events()]
    failed_agents = [e for e in of_type(events, EventType.agent_message) if e.data.get("status") == "failed"]
    assert not failed_agents, failed_agents[0].data
    assert run.outcome is not None and run.outcome.status is RunStatus.failed
    assert "stopped before it finished" in (run.outcome.error_message or "")
