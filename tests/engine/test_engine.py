"""The engine: strategies, ordering, skipping, bounds, timeout, cancel, structured output, and the event model."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from aiops_executor.engine import CompiledTeam, ExecutionRun, NodeStatus, RunRequest, RunStatus
from aiops_executor.engine.events import TERMINAL_EVENTS, EventType, ExecutionEvent
from aiops_executor.engine.failures import error_text
from aiops_executor.llm.runtime.errors import Failure, FailureKind, ProviderCallError
from tests.engine_support import (
    BROKEN,
    CHOOSE_FINISH,
    PLAIN,
    PLAIN_WORDS,
    SIM_ANSWER,
    Script,
    SimulatorSource,
    agent,
    default_checkpointer,
    edge,
    node,
    of_type,
    run_team,
    team,
    tool_registry,
)


@pytest.fixture(autouse=True)
def _on_each_checkpointer(checkpointer: BaseCheckpointSaver[Any]) -> Iterator[None]:
    token = default_checkpointer.set(checkpointer)
    yield
    default_checkpointer.reset(token)


PROVIDER_MESSAGE = "model sim-1 of provider cloud failed on every endpoint (main: HTTP 503, overloaded)"


def provider_error() -> ProviderCallError:
    """What the model runtime raises when a provider call failed on every route."""
    return ProviderCallError(Failure(FailureKind.server, PROVIDER_MESSAGE, status=503))


# gateway calls checkout, checkout depends on the database: db runs first, then checkout, then gateway.
CHAIN = [edge("gateway", "checkout", "calls"), edge("checkout", "db", "depends_on")]


def dispatched(events: list, kind: str = EventType.global_supervisor_decision) -> list[list[str]]:
    field = "next_nodes" if kind == EventType.global_supervisor_decision else "next_agents"
    return [e.data[field] for e in of_type(events, kind) if e.data[field]]


def node_starts(events: list) -> list[str]:
    """Node ids in the order their teams first spoke."""
    seen: list[str] = []
    for event in of_type(events, EventType.node_supervisor_decision):
        if event.node_id not in seen:
            seen.append(event.node_id)
    return seen


# --------------------------------------------------------------------------------------------- event model


async def test_event_sequence_follows_the_contract() -> None:
    spec = team([node("gateway"), node("checkout"), node("db")], CHAIN)
    run, events = await run_team(spec, context={"ticket": "INC-1"}, execution_id="exec-1")

    stored = [e for e in events if not e.is_live]
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert events[0].type == EventType.execution_start
    assert events[0].data["input"] == {"task": "Why is checkout slow?", "context": {"ticket": "INC-1"}}
    assert events[-1].type == EventType.execution_complete
    assert sum(e.type in TERMINAL_EVENTS for e in events) == 1
    for event in events:
        payload = event.payload()
        assert payload["execution_id"] == "exec-1" and payload["team_id"] == "team-1"
        # A token delta is live only: no seq of its own; it belongs after the stored event whose seq it keeps.
        assert payload.get("seq") == (None if event.is_live else event.seq)
        assert payload["timestamp"].endswith("Z")
        if event.type in (EventType.node_supervisor_decision, EventType.node_supervisor_message):
            assert payload["supervisor_id"] == f"{payload['node_id']}.supervisor"
        if event.type in (EventType.global_supervisor_decision, EventType.global_supervisor_message):
            assert payload["supervisor_id"] == "global_supervisor"
            assert "node_id" not in payload
        if event.type in (EventType.agent_message, EventType.agent_token, EventType.tool_call):
            assert payload["agent_id"] == "a1" and payload["node_id"] in {"gateway", "checkout", "db"}
        if event.type == EventType.node_complete:
            assert payload["status"] == "success" and payload["result"]["node_id"] == payload["node_id"]
    json.dumps([e.payload() for e in events])  # every payload is JSON

    # Within a node team: decision -> tool call -> tokens -> agent message -> report -> node_complete.
    db_events = [e.type for e in events if e.node_id == "db"]
    assert db_events[0] == EventType.node_supervisor_decision
    assert db_events.index(EventType.tool_call) < db_events.index(EventType.agent_message)
    assert db_events.index(EventType.agent_token) < db_events.index(EventType.agent_message)
    assert db_events[-2:] == [EventType.node_supervisor_message, EventType.node_complete]

    tool_call = of_type(events, EventType.tool_call)[0]
    assert tool_call.data["tool"] == "probe"
    assert tool_call.data["input"] == {"url": "http://db.internal/health"}
    assert tool_call.data["output"]["node"] == "db"
    assert tool_call.data["status"] == "success" and tool_call.data["duration_ms"] >= 0

    final = events[-1].data
    assert final["status"] == "success" and final["duration_ms"] >= 0
    assert [n["node_id"] for n in final["result"]["node_results"]] == ["db", "checkout", "gateway"]
    assert final["result"]["summary"].startswith("[simulator]")
    assert run.outcome is not None and run.outcome.status is RunStatus.success


async def test_tokens_are_not_streamed_when_switched_off() -> None:
    spec = team([node("db")])
    run = ExecutionRun(
        CompiledTeam(spec, tool_registry()), RunRequest("e", "t", "task"), SimulatorSource(), stream_tokens=False
    )
    events = [e async for e in run.events()]
    assert not of_type(events, EventType.agent_token)
    assert of_type(events, EventType.agent_message)


# --------------------------------------------------------------------------------------------- global strategies


def first_index(events: list[ExecutionEvent], node_id: str, *types: EventType) -> int:
    return next(i for i, e in enumerate(events) if e.node_id == node_id and (not types or e.type in types))


async def test_hierarchical_is_dataflow_and_hands_upstream_findings_down() -> None:
    upstream_reader = agent("reader", tools=(), user_prompt_template="{upstream}")
    spec = team(
        [node("gateway", [upstream_reader]), node("checkout"), node("cache"), node("db")],
        [*CHAIN, edge("checkout", "cache", "calls")],
    )
    _, events = await run_team(spec)
    # Every node team is dispatched at once; each starts working only once what it depends on has finished.
    assert dispatched(events) == [["cache", "db", "checkout", "gateway"]]
    for upstream, dependent in (("db", "checkout"), ("cache", "checkout"), ("checkout", "gateway")):
        assert first_index(events, upstream, EventType.node_complete) < first_index(events, dependent)
    gateway_agent = next(e for e in of_type(events, EventType.agent_message) if e.node_id == "gateway")
    # The dependent's prompt carried what checkout found (the simulator echoes its brief).
    assert "[checkout]" in gateway_agent.data["message"]


async def test_parallel_dispatches_every_node_team_at_once_and_they_run_concurrently() -> None:
    # Each node's tool waits until all three node teams are inside it: run one after another, it would time out.
    barrier = asyncio.Barrier(3)
    nodes = [node(n, [agent("a1", tools=("rendezvous",))]) for n in ("a", "b", "c")]
    _, events = await run_team(team(nodes, strategy="parallel"), registry=tool_registry(barrier))
    assert dispatched(events) == [["a", "b", "c"]]
    calls = of_type(events, EventType.tool_call)
    assert [c.data["status"] for c in calls] == ["success"] * 3
    assert all(c.data["output"]["met"] == 3 for c in calls)


async def test_agents_defined_alike_share_a_graph_but_each_tool_call_serves_its_own_node() -> None:
    nodes = [node(n, [agent("a1"), agent("a2")]) for n in ("web", "api", "db")]
    _, events = await run_team(team(nodes, strategy="parallel"), registry=tool_registry(tool_delay=0.01))
    calls = of_type(events, EventType.tool_call)
    assert len(calls) == 6
    for call in calls:
        assert call.data["output"]["node"] == call.node_id
        assert call.data["input"] == {"url": f"http://{call.node_id}.internal/health"}
    assert sorted((c.node_id, c.agent_id) for c in calls) == sorted(
        (n, a) for n in ("web", "api", "db") for a in ("a1", "a2")
    )


async def test_a_dependency_wave_runs_concurrently() -> None:
    barrier = asyncio.Barrier(2)
    nodes = [node("api"), *(node(n, [agent("a1", tools=("rendezvous",))]) for n in ("db", "cache"))]
    edges = [edge("api", "db"), edge("api", "cache")]
    _, events = await run_team(team(nodes, edges, "hierarchical"), registry=tool_registry(barrier))
    waits = [c for c in of_type(events, EventType.tool_call) if c.data["tool"] == "rendezvous"]
    assert [c.data["output"]["met"] for c in waits] == [2, 2]


async def test_sequential_runs_one_node_team_at_a_time_in_dependency_order() -> None:
    spec = team([node("gateway"), node("checkout"), node("db")], CHAIN, "sequential")
    _, events = await run_team(spec)
    assert dispatched(events) == [["db"], ["checkout"], ["gateway"]]
    # No node team starts before the previous one completed.
    order = [
        (e.type, e.node_id) for e in events if e.type in (EventType.node_supervisor_decision, EventType.node_complete)
    ]
    finished: list[str] = []
    for kind, node_id in order:
        if kind == EventType.node_complete:
            finished.append(node_id)
        else:
            assert len(finished) == ["db", "checkout", "gateway"].index(node_id)


async def test_data_flow_orders_source_first_and_monitors_imposes_no_order() -> None:
    spec = team(
        [node("ingest"), node("warehouse"), node("grafana")],
        [edge("ingest", "warehouse", "data_flow"), edge("grafana", "warehouse", "monitors")],
    )
    _, events = await run_team(spec)
    assert dispatched(events) == [["ingest", "grafana", "warehouse"]]
    assert first_index(events, "ingest", EventType.node_complete) < first_index(events, "warehouse")
    # monitors imposes no order: grafana starts before warehouse has finished.
    assert first_index(events, "grafana") < first_index(events, "warehouse", EventType.node_complete)


async def test_adaptive_global_supervisor_chooses_among_ready_node_teams() -> None:
    spec = team([node("gateway"), node("checkout"), node("db"), node("cache")], CHAIN, "adaptive")
    _, events = await run_team(spec)
    batches = dispatched(events)
    # The simulator picks the first ready node it has not heard from; db and cache are ready first.
    assert batches[0] == ["db"]
    flat = [n for batch in batches for n in batch]
    assert sorted(flat) == ["cache", "checkout", "db", "gateway"]
    assert flat.index("db") < flat.index("checkout") < flat.index("gateway")
    assert events[-1].data["status"] == "success"


async def test_max_iterations_bounds_the_adaptive_global_loop() -> None:
    spec = team([node("a"), node("b"), node("c")], strategy="adaptive", max_iterations=2)
    run, events = await run_team(spec)
    assert dispatched(events) == [["a"], ["b"]]
    final = of_type(events, EventType.global_supervisor_decision)[-1]
    assert final.data["next_nodes"] == [] and "max_iterations (2)" in final.data["decision"]
    statuses = {n.node_id: n.status for n in run.outcome.node_results}
    assert statuses == {"a": NodeStatus.success, "b": NodeStatus.success, "c": NodeStatus.skipped}


# --------------------------------------------------------------------------------------------- node strategies


async def test_round_robin_gives_every_agent_a_turn_in_order() -> None:
    spec = team([node("db", [agent("first"), agent("second"), agent("third")], "round_robin")])
    run, events = await run_team(spec)
    assert dispatched(events, EventType.node_supervisor_decision) == [["first"], ["second"], ["third"]]
    assert [a.agent_id for a in run.outcome.node_results[0].agents] == ["first", "second", "third"]


async def test_priority_stops_once_the_task_is_answered() -> None:
    spec = team([node("db", [agent("first"), agent("second")], "priority")])
    run, events = await run_team(spec)
    # The supervisor judged the first agent's report sufficient (the simulator answers "answered").
    assert dispatched(events, EventType.node_supervisor_decision) == [["first"]]
    assert "task answered" in of_type(events, EventType.node_supervisor_decision)[-1].data["decision"]
    assert [a.agent_id for a in run.outcome.node_results[0].agents] == ["first"]


async def test_priority_moves_on_when_an_agent_fails() -> None:
    spec = team([node("db", [agent("first", provider=BROKEN), agent("second")], "priority")])
    run, events = await run_team(spec)
    assert dispatched(events, EventType.node_supervisor_decision) == [["first"], ["second"]]
    agents = run.outcome.node_results[0].agents
    assert [(a.agent_id, a.status) for a in agents] == [("first", "failed"), ("second", "success")]
    assert "connection refused" in (agents[0].error or "")
    assert run.outcome.node_results[0].status is NodeStatus.success


async def test_adaptive_node_supervisor_picks_agents_until_it_finishes() -> None:
    spec = team([node("db", [agent("logs"), agent("metrics")], "adaptive")])
    _, events = await run_team(spec)
    assert dispatched(events, EventType.node_supervisor_decision) == [["logs"], ["metrics"]]
    assert of_type(events, EventType.node_supervisor_decision)[-1].data["next_agents"] == []


async def test_max_iterations_bounds_the_adaptive_node_loop() -> None:
    spec = team([node("db", [agent("logs"), agent("metrics"), agent("traces")], "adaptive")], max_iterations=2)
    _, events = await run_team(spec)
    assert dispatched(events, EventType.node_supervisor_decision) == [["logs"], ["metrics"]]
    assert "max_iterations (2)" in of_type(events, EventType.node_supervisor_decision)[-1].data["decision"]


async def test_agent_overrides_reach_the_model_source() -> None:
    source = SimulatorSource()
    spec = team([node("db", [agent("a1", temperature=0.1, max_tokens=256)])])
    await run_team(spec, source=source)
    assert ("local-sim", "sim-1", {"temperature": 0.1, "max_tokens": 256}) in source.requested


# --------------------------------------------------------------------------------------------- failures


async def test_a_failed_node_skips_its_dependents_and_the_run_keeps_partial_results() -> None:
    nodes = [
        node("gateway"),
        node("checkout"),
        node("db", [agent("a1", provider=BROKEN)]),
        node("search"),
    ]
    run, events = await run_team(team(nodes, CHAIN))
    statuses = {n.node_id: n.status for n in run.outcome.node_results}
    assert statuses == {
        "db": NodeStatus.failed,
        "search": NodeStatus.success,
        "checkout": NodeStatus.skipped,
        "gateway": NodeStatus.skipped,
    }
    skipped = {e.node_id: e.data for e in of_type(events, EventType.node_complete) if e.data["status"] == "skipped"}
    assert "upstream db" in skipped["checkout"]["result"]["output"]
    assert "upstream checkout" in skipped["gateway"]["result"]["output"]
    assert "connection refused" in (run.outcome.node_results[0].error or "")
    assert run.outcome.status is RunStatus.success  # partial results: search succeeded
    assert events[-1].type == EventType.execution_complete


async def test_a_broken_node_supervisor_fails_its_node_with_the_reason_and_keeps_what_its_agents_found() -> None:
    run, events = await run_team(team([node("db", supervisor_provider=BROKEN), node("web")]))
    results = {n.node_id: n for n in run.outcome.node_results}
    assert {n: r.status for n, r in results.items()} == {"db": NodeStatus.failed, "web": NodeStatus.success}
    # Round robin needs no model to route; the report is where the supervisor's model broke.
    assert results["db"].error == "supervisor of db: could not report the findings: connection refused"
    assert [(a.agent_id, a.status) for a in results["db"].agents] == [("a1", "success")]
    complete = next(e for e in of_type(events, EventType.node_complete) if e.node_id == "db")
    assert complete.data["status"] == "failed" and complete.data["result"]["error"] == results["db"].error


async def test_when_every_node_team_fails_the_run_says_why_for_each_without_asking_for_a_summary() -> None:
    gateway = Script()
    nodes = [node("db", [agent("a1", provider=BROKEN)]), node("web", [agent("a1", provider="flaky")])]
    source = SimulatorSource(scripts={"flaky": Script(text=provider_error()), "gateway": gateway})
    run, events = await run_team(team(nodes, global_provider="gateway"), source=source)
    assert run.outcome.status is RunStatus.failed
    terminal = events[-1]
    assert terminal.type == EventType.execution_error
    assert terminal.data["error_code"] == "EXECUTION_FAILED"
    assert terminal.data["error_message"] == (
        f"every node team failed: db: agent a1: connection refused; web: agent a1: {PROVIDER_MESSAGE}"
    )
    assert [n["status"] for n in terminal.data["result"]["node_results"]] == ["failed", "failed"]
    assert gateway.calls["text"] == 0  # nothing to summarise
    assert not of_type(events, EventType.global_supervisor_message)


async def test_the_message_of_a_run_whose_many_node_teams_failed_stays_bounded() -> None:
    long_error = ProviderCallError(Failure(FailureKind.server, "overloaded " * 60))
    nodes = [node(f"n{i}", [agent("a1", provider="flaky")]) for i in range(12)]
    source = SimulatorSource(scripts={"flaky": Script(text=long_error)})
    run, _ = await run_team(team(nodes, strategy="parallel"), source=source)
    message = run.outcome.error_message or ""
    assert message.startswith("every node team failed: n0: agent a1: overloaded")
    assert len(message) <= 2000 and re.search(r"; and \d+ more$", message)


async def test_when_no_node_team_succeeds_the_run_names_the_failed_and_the_skipped() -> None:
    nodes = [node("checkout"), node("db", [agent("a1", provider=BROKEN)])]
    run, events = await run_team(team(nodes, [edge("checkout", "db")]))
    assert run.outcome.status is RunStatus.failed
    assert events[-1].data["error_message"] == (
        "no node team succeeded: db: agent a1: connection refused; checkout: skipped: upstream db did not succeed"
    )


async def test_a_global_supervisor_that_cannot_summarise_fails_the_run_and_keeps_the_node_results() -> None:
    source = SimulatorSource(scripts={"gateway": Script(text=provider_error())})
    run, events = await run_team(team([node("db"), node("web")], global_provider="gateway"), source=source)
    assert run.outcome.status is RunStatus.failed
    terminal = events[-1]
    assert terminal.type == EventType.execution_error and terminal.data["error_code"] == "EXECUTION_FAILED"
    expected = f"the global supervisor could not summarise the findings: {PROVIDER_MESSAGE}"
    assert terminal.data["error_message"] == expected
    # The node teams finished before the summary broke, and their results are kept.
    assert [n.status for n in run.outcome.node_results] == [NodeStatus.success, NodeStatus.success]


# --------------------------------------------------------------------------------------------- routing failures


def node_decisions(events: list[ExecutionEvent], node_id: str = "db") -> list[dict[str, Any]]:
    return [e.data for e in of_type(events, EventType.node_supervisor_decision) if e.node_id == node_id]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("error", f"its model call failed: {PROVIDER_MESSAGE}"),
        (PLAIN, f'it answered in plain words, not with the structured answer asked for: "{PLAIN_WORDS}"'),
        (CHOOSE_FINISH, "it chose to finish before any agent had worked"),
    ],
)
async def test_an_adaptive_node_supervisor_that_cannot_route_before_any_agent_worked_fails_its_node(
    answer: str, problem: str
) -> None:
    script = Script(NextAgent=provider_error() if answer == "error" else answer)
    spec = team([node("db", [agent("logs"), agent("metrics")], "adaptive", supervisor_provider="boss"), node("web")])
    run, events = await run_team(spec, source=SimulatorSource(scripts={"boss": script}))

    db = run.outcome.node_results[0]
    assert db.status is NodeStatus.failed and db.agents == []
    assert db.error == f"supervisor of db: could not route the task to an agent: {problem}"
    assert "ProviderCallError" not in db.error
    assert not [e for e in of_type(events, EventType.agent_message) if e.node_id == "db"]
    [decision] = node_decisions(events)
    assert decision["next_agents"] == [] and decision["error"] == db.error
    assert decision["decision"] == f"fail: could not route the task to an agent: {problem}"
    assert script.calls["text"] == 0  # no report of findings nobody made
    complete = next(e for e in of_type(events, EventType.node_complete) if e.node_id == "db")
    assert complete.data["status"] == "failed" and complete.data["result"]["error"] == db.error
    # web succeeded: the run reports its findings, and db's failure in node_results.
    assert run.outcome.status is RunStatus.success


@pytest.mark.parametrize("answer", ["error", PLAIN])
async def test_an_adaptive_node_supervisor_that_cannot_route_after_an_agent_worked_reports_the_findings(
    answer: str,
) -> None:
    failing = provider_error() if answer == "error" else answer
    script = Script(NextAgent=[SIM_ANSWER, failing])
    spec = team([node("db", [agent("logs"), agent("metrics")], "adaptive", supervisor_provider="boss")])
    run, events = await run_team(spec, source=SimulatorSource(scripts={"boss": script}))

    db = run.outcome.node_results[0]
    assert db.status is NodeStatus.success and [a.agent_id for a in db.agents] == ["logs"]
    assert db.output.startswith("[simulator]")  # the report of what logs found
    first, last = node_decisions(events)
    assert first["next_agents"] == ["logs"] and "warning" not in first
    assert last["next_agents"] == [] and last["warning"].startswith("the supervisor could not choose the next agent")
    assert last["decision"].startswith("finish: reporting what the agents found; the supervisor could not choose")
    assert (PROVIDER_MESSAGE if answer == "error" else PLAIN_WORDS) in last["warning"]
    assert run.outcome.status is RunStatus.success


@pytest.mark.parametrize("answer", ["error", PLAIN])
async def test_priority_moves_on_to_the_next_agent_when_its_judge_cannot_answer(answer: str) -> None:
    script = Script(TaskAnswered=provider_error() if answer == "error" else answer)
    spec = team([node("db", [agent("first"), agent("second")], "priority", supervisor_provider="boss")])
    run, events = await run_team(spec, source=SimulatorSource(scripts={"boss": script}))

    assert dispatched(events, EventType.node_supervisor_decision) == [["first"], ["second"]]
    second = node_decisions(events)[1]
    assert second["warning"].startswith("the supervisor could not judge whether the task is answered")
    assert (PROVIDER_MESSAGE if answer == "error" else PLAIN_WORDS) in second["warning"]
    assert second["decision"].startswith("run second: next agent by priority; the supervisor could not judge")
    assert run.outcome.node_results[0].status is NodeStatus.success
    assert [a.agent_id for a in run.outcome.node_results[0].agents] == ["first", "second"]


@pytest.mark.parametrize("answer", ["error", PLAIN, CHOOSE_FINISH])
async def test_an_adaptive_global_supervisor_that_cannot_decide_falls_back_to_the_dependency_order(
    answer: str,
) -> None:
    script = Script(NextNodes=provider_error() if answer == "error" else answer)
    spec = team([node("gateway"), node("checkout"), node("db"), node("cache")], CHAIN, "adaptive", global_provider="gw")
    run, events = await run_team(spec, source=SimulatorSource(scripts={"gw": script}))

    # Waves of ready node teams, in dependency order.
    assert dispatched(events) == [["db", "cache"], ["checkout"], ["gateway"]]
    decisions = [e.data for e in of_type(events, EventType.global_supervisor_decision)]
    for decision in decisions[:-1]:
        assert decision["warning"].startswith("the global supervisor could not decide which node teams run next")
        assert "dependency order" in decision["decision"]
    assert "warning" not in decisions[-1] and decisions[-1]["decision"] == "finish: every node team has finished"
    assert script.calls["NextNodes"] == 1  # not asked again once it could not decide
    assert {n.status for n in run.outcome.node_results} == {NodeStatus.success}
    assert run.outcome.status is RunStatus.success


async def test_an_adaptive_global_supervisor_may_finish_once_a_node_team_has_run() -> None:
    script = Script(NextNodes=[SIM_ANSWER, CHOOSE_FINISH])
    spec = team([node("a"), node("b")], strategy="adaptive", global_provider="gw")
    run, events = await run_team(spec, source=SimulatorSource(scripts={"gw": script}))
    assert dispatched(events) == [["a"]]
    assert all("warning" not in e.data for e in of_type(events, EventType.global_supervisor_decision))
    statuses = {n.node_id: n.status for n in run.outcome.node_results}
    assert statuses == {"a": NodeStatus.success, "b": NodeStatus.skipped}
    assert run.outcome.status is RunStatus.success


# --------------------------------------------------------------------------------------------- error messages


class Silent(Exception):
    """An exception with no message."""


def test_error_texts_say_where_and_what_in_the_users_terms() -> None:
    assert error_text(provider_error(), "agent probe") == f"agent probe: {PROVIDER_MESSAGE}"
    assert error_text(ValueError("bad value"), "agent probe") == "agent probe: bad value"
    assert error_text(Silent(), "agent probe") == "unexpected error in agent probe"
    report = error_text(Silent(), "supervisor of db", "could not report")
    assert report == "supervisor of db: could not report: unexpected error"
    assert len(error_text(ValueError("x" * 5000), "agent probe")) <= 1000


async def test_a_failed_agent_reports_the_providers_message_not_a_class_name() -> None:
    source = SimulatorSource(scripts={"cloud": Script(text=provider_error())})
    spec = team([node("db", [agent("probe", provider="cloud"), agent("second")])])
    run, events = await run_team(spec, source=source)
    probe = run.outcome.node_results[0].agents[0]
    assert probe.status == "failed" and probe.error == f"agent probe: {PROVIDER_MESSAGE}"
    message = next(e for e in of_type(events, EventType.agent_message) if e.agent_id == "probe")
    assert message.data["status"] == "failed" and message.data["error"] == probe.error


# --------------------------------------------------------------------------------------------- timeout and cancel


async def test_timeout_stops_the_run_promptly_and_keeps_partial_results() -> None:
    spec = team([node("fast"), node("slow")], [edge("slow", "fast")], "sequential")
    source = SimulatorSource(latency_ms=150)  # fast finishes in ~0.5 s; slow would need as long again
    loop = asyncio.get_running_loop()
    started = loop.time()
    run, events = await run_team(spec, source=source, timeout_seconds=0.9)
    assert loop.time() - started < 1.5
    assert run.outcome.status is RunStatus.timeout
    terminal = events[-1]
    assert terminal.type == EventType.execution_error
    assert terminal.data["error_code"] == "EXECUTION_TIMEOUT" and terminal.data["status"] == "timeout"
    statuses = {n["node_id"]: n["status"] for n in terminal.data["result"]["node_results"]}
    assert statuses == {"fast": "success", "slow": "timeout"}


async def test_cancel_abandons_in_flight_model_calls_promptly() -> None:
    spec = team([node("a"), node("b")], strategy="parallel")
    run = ExecutionRun(CompiledTeam(spec, tool_registry()), RunRequest("e", "t", "task"), SimulatorSource(60_000))
    loop = asyncio.get_running_loop()
    events = []
    cancelled_at = None
    async for event in run.events():
        events.append(event)
        if event.type == EventType.node_supervisor_decision and cancelled_at is None:
            cancelled_at = loop.time()
            run.cancel()
    assert cancelled_at is not None and loop.time() - cancelled_at < 1.0
    assert events[-1].type == EventType.execution_cancelled
    assert run.outcome.status is RunStatus.cancelled
    assert {n.status for n in run.outcome.node_results} == {NodeStatus.cancelled}
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_cancel_before_the_first_event_still_ends_with_cancelled() -> None:
    run = ExecutionRun(CompiledTeam(team([node("a")]), tool_registry()), RunRequest("e", "t", "x"), SimulatorSource())
    run.cancel()
    events = [e async for e in run.events()]
    assert [e.type for e in events] == [EventType.execution_start, EventType.execution_cancelled]


# --------------------------------------------------------------------------------------------- structured output

INCIDENT = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "severity": {"type": "string", "enum": ["low", "high"]},
        "affected": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["summary", "severity", "affected"],
}


async def test_structured_output_matches_the_schema() -> None:
    run, events = await run_team(team([node("db")]), output_schema=INCIDENT)
    output = events[-1].data["structured_output"]
    assert run.outcome.status is RunStatus.success
    assert output["severity"] in {"low", "high"} and isinstance(output["affected"], list)
    assert output["summary"].startswith("[simulator]")


async def test_structured_output_fails_clearly_after_three_attempts() -> None:
    impossible = {
        "type": "object",
        "properties": {"ticket": {"type": "string", "pattern": "^INC-[0-9]+$"}},
        "required": ["ticket"],
    }
    run, events = await run_team(team([node("db")]), output_schema=impossible)
    assert run.outcome.status is RunStatus.failed
    terminal = events[-1]
    assert terminal.type == EventType.execution_error
    assert terminal.data["error_code"] == "SCHEMA_GENERATION_FAILED"
    assert "3 attempts" in terminal.data["error_message"]
    assert terminal.data["errors"][0]["path"] == "$.ticket"
    assert re.search("does not match", terminal.data["errors"][0]["message"])
    assert terminal.data["partial_output"]["ticket"]
    assert terminal.data["result"]["node_results"][0]["status"] == "success"


@pytest.mark.parametrize("schema", [{"type": "array"}, {"type": "object", "properties": {"x": {"type": 5}}}])
async def test_an_invalid_output_schema_fails_the_run_with_a_clear_message(schema: dict) -> None:
    run, events = await run_team(team([node("db")]), output_schema=schema)
    assert run.outcome.status is RunStatus.failed
    assert "output_schema" in events[-1].data["error_message"]
