"""The Global Supervisor's graph: it dispatches node teams (``Send``), collects their results and summarises.

    START -> global_supervisor -(Send per node)-> node_team -> global_supervisor ... -> summarize -> END

Which node teams run next follows the global ``coordination_strategy`` (``PLANNERS``). ``hierarchical`` is
dataflow: every node team is dispatched in one step and each waits (in ``_node_team``) for the node teams it
depends on, so it starts the moment they have finished, not when a whole level has.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from aiops_executor.core.control_flow import pass_control_flow
from aiops_executor.core.logging import log_context
from aiops_executor.core.text import shorten
from aiops_executor.engine import prompts
from aiops_executor.engine.events import GLOBAL_SUPERVISOR_ID, EventType, PendingEvent
from aiops_executor.engine.evidence import (
    NO_EVIDENCE,
    NodeEvidence,
    no_evidence_reason,
    node_verdict,
    rank_suspects,
    ranking_brief,
)
from aiops_executor.engine.failures import call_failed, call_failure, error_text, message_text
from aiops_executor.engine.models import Usage, UsageMeter, metering
from aiops_executor.engine.ordering import OrderingGraph
from aiops_executor.engine.results import AgentResult, NodeResult, NodeStatus
from aiops_executor.engine.routing import FINISH, ask, routing_model
from aiops_executor.engine.state import TeamRun, TeamState, team_run
from aiops_executor.engine.structured import generate_structured_output
from aiops_executor.engine.topology import GlobalStrategy, NodeSpec, Topology
from aiops_executor.tools.verdicts import Verdict

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Wave:
    """The node teams a global supervisor step dispatches, and why."""

    next_nodes: list[str]
    reason: str
    # The adaptive supervisor could not decide: from then on node teams run in dependency order (said why).
    fallback: str | None = None
    usage: Usage = field(default_factory=Usage)


def finish_node(result: NodeResult) -> dict[str, dict[str, Any]]:
    """Announces a finished node and returns it as a state update."""
    body = result.as_dict()
    get_stream_writer()(
        PendingEvent(
            EventType.node_complete,
            node_id=result.node_id,
            data={"status": result.status.value, "result": body, "usage": body["usage"]},
        )
    )
    return {result.node_id: body}


def reports(results: Mapping[str, Any]) -> list[str]:
    return [
        prompts.report(node_id, f"({r['status']}) {r['output'] or r.get('error') or ''}")
        for node_id, r in results.items()
        if r["status"] != NodeStatus.skipped
    ]


class GlobalTeam:
    """The global graph of one team; node teams run as ``node_graph``."""

    def __init__(self, topology: Topology, ordering: OrderingGraph, node_graph: CompiledStateGraph[Any, Any, Any, Any]):
        self.topology = topology
        self.nodes: dict[str, NodeSpec] = {n.node_id: n for n in topology.nodes}
        self.ordering = ordering
        self.order = ordering.topological_order()
        self.node_graph = node_graph
        self.strategy = topology.global_supervisor.coordination_strategy
        self.planners: dict[GlobalStrategy, Planner] = {
            GlobalStrategy.parallel: self._parallel,
            GlobalStrategy.hierarchical: self._hierarchical,
            GlobalStrategy.sequential: self._sequential,
            GlobalStrategy.adaptive: self._adaptive,
        }
        self.graph = self._build()

    @property
    def dataflow(self) -> bool:
        return self.strategy is GlobalStrategy.hierarchical

    def _build(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        graph = StateGraph(TeamState)
        graph.add_node("global_supervisor", self._supervisor)
        # It receives a Send payload (one node's work order), not the team state.
        graph.add_node("node_team", self._node_team)  # type: ignore[arg-type]
        graph.add_node("summarize", self._summarize)
        graph.add_edge(START, "global_supervisor")
        graph.add_conditional_edges("global_supervisor", self._dispatch, ["node_team", "summarize"])
        graph.add_edge("node_team", "global_supervisor")
        graph.add_edge("summarize", END)
        return graph.compile(name="agent_team")

    def _dispatch(self, state: TeamState) -> list[Send] | str:
        results = state.get("node_results", {})
        nodes = state.get("next_nodes", [])
        if not nodes:
            return "summarize"
        return [
            Send(
                "node_team",
                {
                    "node_id": node_id,
                    "task": state["task"],
                    "context": state["context"],
                    "upstream": {
                        up: str(results[up]["output"]) for up in self.ordering.upstream(node_id) if up in results
                    },
                },
            )
            for node_id in nodes
        ]

    def _skip_blocked(self, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Marks every node downstream of a node that did not succeed as skipped (in dependency order)."""
        skipped: dict[str, dict[str, Any]] = {}
        for node_id in self.order:
            if node_id in results or node_id in skipped:
                continue
            blocked = [
                up
                for up in self.ordering.upstream(node_id)
                if (results.get(up) or skipped.get(up) or {}).get("status", NodeStatus.success) != NodeStatus.success
            ]
            if blocked:
                reason = f"skipped: upstream {', '.join(blocked)} did not succeed"
                skipped |= finish_node(NodeResult(node_id, NodeStatus.skipped, reason))
        return skipped

    def _ready(self, results: Mapping[str, Any]) -> list[str]:
        return [
            node_id
            for node_id in self.order
            if node_id not in results and all(up in results for up in self.ordering.upstream(node_id))
        ]

    # -- the strategies: which node teams run next -----------------------------------------------

    async def _parallel(self, run: TeamRun, state: TeamState, results: Mapping[str, Any], ready: list[str]) -> Wave:
        return Wave(list(self.order) if state.get("decisions", 0) == 0 else [], "every node team at once")

    async def _hierarchical(self, run: TeamRun, state: TeamState, results: Mapping[str, Any], ready: list[str]) -> Wave:
        return Wave(
            [node_id for node_id in self.order if node_id not in results],
            "dataflow: each node team starts as soon as the node teams it depends on have finished",
        )

    async def _sequential(self, run: TeamRun, state: TeamState, results: Mapping[str, Any], ready: list[str]) -> Wave:
        return Wave(ready[:1], "next node in dependency order")

    async def _adaptive(self, run: TeamRun, state: TeamState, results: Mapping[str, Any], ready: list[str]) -> Wave:
        if state.get("decisions", 0) >= run.settings.max_iterations:
            return Wave([], f"max_iterations ({run.settings.max_iterations}) reached")
        if not ready:
            return Wave([], "")
        fallback = state.get("routing_fallback")
        meter = UsageMeter()
        next_nodes: list[str] = []
        reason = ""
        if not fallback:
            with metering() as meter:
                next_nodes, reason, problem = await self._adaptive_nodes(run, state, results, ready)
            if problem:
                fallback = (
                    f"the global supervisor could not decide which node teams run next ({problem}); "
                    "they run in the topology's dependency order"
                )
                logger.warning("global supervisor could not decide", warning=fallback)
        if fallback:
            # Asking again would most likely fail again, and cost a failover each time: the rest of the run
            # keeps to the dependency order, each wave of ready node teams at once.
            next_nodes, reason = ready, "dependency order, in place of the global supervisor's choice"
        return Wave(next_nodes, reason, fallback, meter.total)

    async def _adaptive_nodes(
        self, run: TeamRun, state: TeamState, results: Mapping[str, Any], ready: list[str]
    ) -> tuple[list[str], str, str]:
        """The node teams the global supervisor picks among ``ready`` and why; or, when it cannot decide,
        no pick and the problem (the third item)."""
        messages = self._messages(state, results, "Which node teams should run next? FINISH when done.")
        try:
            model = await run.model(self.topology.global_supervisor)
            answer, problem = await ask(model, routing_model("NextNodes", ready, many=True), messages)
        except Exception as exc:
            pass_control_flow(exc)
            return [], "", call_failed(exc)
        if answer is None:
            return [], "", problem
        chosen = getattr(answer, "next", None) or []
        picked = list(dict.fromkeys(str(c) for c in chosen if c != FINISH and c in ready))
        reason = shorten(getattr(answer, "reason", ""), 300)
        if picked:
            return picked, reason or "supervisor choice", ""
        if any(r["status"] != NodeStatus.skipped for r in results.values()):
            return [], reason or "supervisor finished", ""  # node teams have reported: finishing is its call
        return [], "", "it chose to finish before any node team had run"

    # -- the graph's nodes -----------------------------------------------------------------------

    async def _supervisor(self, state: TeamState, config: RunnableConfig) -> dict[str, Any]:
        run = team_run(config)
        results = dict(state.get("node_results", {}))
        skipped: dict[str, dict[str, Any]] = {}
        if self.strategy is not GlobalStrategy.parallel:
            skipped = self._skip_blocked(results)
            results.update(skipped)
        ready = self._ready(results)
        wave = await self.planners[self.strategy](run, state, results, ready)
        next_nodes, reason = wave.next_nodes, wave.reason
        if not next_nodes:
            reason = reason if self.strategy is GlobalStrategy.adaptive and ready else "every node team has finished"
            for node_id in self.order:
                if node_id not in results:
                    why = f"skipped: not dispatched by the global supervisor ({reason})"
                    skipped |= finish_node(NodeResult(node_id, NodeStatus.skipped, why))
        data: dict[str, Any] = {
            "decision": f"run {', '.join(next_nodes)}: {reason}" if next_nodes else f"finish: {reason}",
            "next_nodes": next_nodes,
        }
        if wave.fallback and next_nodes:
            data["warning"] = wave.fallback
        get_stream_writer()(
            PendingEvent(EventType.global_supervisor_decision, supervisor_id=GLOBAL_SUPERVISOR_ID, data=data)
        )
        for node_id, body in skipped.items():
            run.dataflow.finish(node_id, body)
        update: dict[str, Any] = {
            "next_nodes": next_nodes,
            "decisions": state.get("decisions", 0) + 1,
            "node_results": skipped,
            "supervisor_usage": wave.usage.as_dict(),
        }
        if wave.fallback:
            update["routing_fallback"] = wave.fallback
        return update

    async def _node_team(self, send: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        node_id = send["node_id"]
        run = team_run(config)
        announced = run.announced.get(node_id)
        if announced is not None:  # finished in an earlier attempt, which was lost before checkpointing it
            run.dataflow.finish(node_id, announced)
            return {"node_results": {node_id: announced}}
        if self.dataflow:
            upstream = await run.dataflow.wait(self.ordering.upstream(node_id))
            blocked = [up for up, body in upstream.items() if body["status"] != NodeStatus.success]
            if blocked:
                reason = f"skipped: upstream {', '.join(blocked)} did not succeed"
                body = finish_node(NodeResult(node_id, NodeStatus.skipped, reason))
                run.dataflow.finish(node_id, body[node_id])
                return {"node_results": body}
            send = {**send, "upstream": {up: str(body["output"]) for up, body in upstream.items()}}
        # Each decision and each agent turn is one step of the subgraph.
        steps = 2 * (len(self.nodes[node_id].agents) + run.settings.max_iterations) + 10
        with (
            log_context(node_id=node_id),
            run.telemetry.node_team(node_id) as step,
            metering() as meter,
        ):
            run.node_meters[node_id] = meter
            started = time.perf_counter()
            try:
                limits: RunnableConfig = {"recursion_limit": steps}
                final = await self.node_graph.ainvoke(send, limits)
                agents = [AgentResult(**t) for t in final.get("turns", [])]
                # The subgraph's state holds the usage of every finished step, also those of an earlier attempt.
                usage = Usage.from_dict(final.get("usage"))
                result = self._judged_node(node_id, agents, final.get("output", ""), final.get("error"), usage)
            except GraphBubbleUp as signal:  # the node team pauses (an approval): so do the node teams waiting on it
                run.dataflow.pause(node_id, signal)
                raise
            except Exception as exc:
                error = error_text(exc, f"node team {node_id}")
                result = NodeResult(node_id, NodeStatus.failed, "", error=error, usage=meter.total)
                logger.warning("node team broke", error_type=type(exc).__name__)
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            finished = {"status": result.status.value, "duration_ms": duration_ms}
            if result.status is NodeStatus.failed:
                logger.warning("node team finished", **finished, error=shorten(result.error, 300))
            else:
                failed = sum(1 for a in result.agents if a.status == "failed")
                logger.info("node team finished", **finished, failed_agents=failed)
            step.status = result.status.value
            body = finish_node(result)
            run.dataflow.finish(node_id, body[node_id])
            return {"node_results": body}

    async def _summarize(self, state: TeamState, config: RunnableConfig) -> dict[str, Any]:
        run = team_run(config)
        results = state.get("node_results", {})
        if not any(r["status"] == NodeStatus.success for r in results.values()):
            # No findings to summarise: the run fails with its node teams' reasons (see ``ExecutionRun``), which
            # a summary call would only delay, bill, or (failing) hide.
            return {"summary": ""}
        update: dict[str, Any] = {}
        with metering() as meter:
            try:
                model = await run.model(self.topology.global_supervisor)
                answer = await model.ainvoke(
                    self._messages(state, results, "Summarise the findings for the task.", ranking=True)
                )
            except Exception as exc:
                pass_control_flow(exc)
                failure = call_failure(exc, "the global supervisor could not summarise the findings")
                return {"failure": failure, "supervisor_usage": meter.total.as_dict()}
            summary = message_text(answer)
            get_stream_writer()(
                PendingEvent(
                    EventType.global_supervisor_message, supervisor_id=GLOBAL_SUPERVISOR_ID, data={"message": summary}
                )
            )
            update["summary"] = summary
            if run.settings.output_schema is not None:
                update |= await self._structured(model, state, results, summary, run.settings.output_schema)
        update["supervisor_usage"] = meter.total.as_dict()
        return update

    async def _structured(
        self, model: Any, state: TeamState, results: Mapping[str, Any], summary: str, schema: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            outcome = await generate_structured_output(
                model,
                schema,
                self.topology.global_supervisor.system_prompt or prompts.DEFAULT_GLOBAL_SUPERVISOR_PROMPT,
                prompts.global_supervisor_brief(state["task"], state["context"], self.topology.nodes),
                [prompts.report(GLOBAL_SUPERVISOR_ID, summary), *reports(results)],
            )
        except Exception as exc:
            pass_control_flow(exc)
            return {"failure": call_failure(exc, "the global supervisor could not produce the structured output")}
        return {
            "structured": {
                "valid": outcome.valid,
                "output": outcome.output,
                "errors": outcome.errors,
                "attempts": outcome.attempts,
            }
        }

    # -- what the supervisor reads and judges ----------------------------------------------------

    def _messages(
        self, state: TeamState, results: Mapping[str, Any], question: str, *, ranking: bool = False
    ) -> list[BaseMessage]:
        messages: list[BaseMessage] = [
            SystemMessage(self.topology.global_supervisor.system_prompt or prompts.DEFAULT_GLOBAL_SUPERVISOR_PROMPT),
            HumanMessage(prompts.global_supervisor_brief(state["task"], state["context"], self.topology.nodes)),
        ]
        messages.extend(AIMessage(text) for text in reports(results))
        if ranking:
            messages.append(HumanMessage(ranking_brief(self.suspects(results))))
        messages.append(HumanMessage(question))
        return messages

    def suspects(self, results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The ranked suspects of these node results (``engine.evidence.rank_suspects``)."""
        nodes = [
            NodeEvidence(node_id, Verdict(body.get("verdict", "unknown")), body.get("evidence") or [])
            for node_id in self.order
            if (body := results.get(node_id)) is not None
        ]
        return rank_suspects(nodes, self.ordering.upstream)

    def _judged_node(
        self, node_id: str, agents: list[AgentResult], output: str, error: str | None, usage: Usage
    ) -> NodeResult:
        """The node team's result with its verdict and evidence; ``NO_EVIDENCE`` when its agents have tools and
        none of their calls observed the resource."""
        evidence = [item for agent in agents for item in agent.evidence]
        status = NodeStatus.failed if error else NodeStatus.success
        error_code = None
        has_tools = any(agent.tools for agent in self.nodes[node_id].agents)
        if status is NodeStatus.success and has_tools and (reason := no_evidence_reason(evidence)) is not None:
            status, error, error_code = NodeStatus.failed, reason, NO_EVIDENCE
        verdict = node_verdict(evidence).value
        return NodeResult(node_id, status, output, agents, error, usage, verdict, evidence, error_code)


Planner = Callable[[TeamRun, TeamState, Mapping[str, Any], list[str]], Awaitable[Wave]]
