"""The Node Team: a Node Supervisor and its agents working on one resource, as a LangGraph subgraph.

    START -> turn -> turn ... -> report -> END   (a turn: the supervisor's decision, then that agent)

One step per agent turn (decision + agent), so one checkpoint per turn: a resumed node team continues after
its last finished turn, and durability costs one checkpoint write per turn, not two. Which node the subgraph
works on travels in its state; its decisions follow the node's ``coordination_strategy`` (``DECIDERS``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from aiops_executor.core.control_flow import pass_control_flow
from aiops_executor.core.logging import log_context
from aiops_executor.core.private_apis.graphs import CONFIG_KEY_DURABILITY
from aiops_executor.core.telemetry import ModelReference
from aiops_executor.core.text import shorten
from aiops_executor.engine import prompts
from aiops_executor.engine.events import EventType, PendingEvent, node_supervisor_id
from aiops_executor.engine.failures import (
    MAX_ERROR_CHARS,
    call_failed,
    error_text,
    message_text,
)
from aiops_executor.engine.models import Usage, metering
from aiops_executor.engine.results import AgentResult
from aiops_executor.engine.routing import FINISH, TaskAnswered, ask, routing_model
from aiops_executor.engine.state import NodeTeamInput, NodeTeamState, TeamRun, team_run
from aiops_executor.engine.tool_calls import AGENT_ID_KEY, NODE_ID_KEY, collect_evidence
from aiops_executor.engine.topology import NodeSpec, NodeStrategy

logger = structlog.get_logger(__name__)

Turns = list[dict[str, Any]]


@dataclass(frozen=True)
class NodeDecision:
    """The node supervisor's decision: the next agent, or none (finish, or fail when ``failure`` is set)."""

    next_agent: str | None
    reason: str
    # The supervisor could not decide as asked, and something else was done: said so, never passed off as its choice.
    warning: str | None = None
    failure: str | None = None  # the node team's error: its supervisor cannot route the task

    def event_data(self) -> dict[str, Any]:
        if self.failure:
            decision = f"fail: {self.reason}"
        elif self.next_agent:
            decision = f"run {self.next_agent}: {self.reason}"
        else:
            decision = f"finish: {self.reason}"
        data: dict[str, Any] = {"decision": decision, "next_agents": [self.next_agent] if self.next_agent else []}
        if self.warning:
            data["warning"] = self.warning
        if self.failure:
            data["error"] = self.failure
        return data


def supervisor_messages(node: NodeSpec, state: NodeTeamState, turns: Turns, question: str) -> list[BaseMessage]:
    messages: list[BaseMessage] = [
        SystemMessage(node.supervisor_config.system_prompt or prompts.DEFAULT_NODE_SUPERVISOR_PROMPT),
        HumanMessage(prompts.node_supervisor_brief(node, state["task"], state["context"])),
    ]
    messages.extend(AIMessage(prompts.report(t["agent_id"], t["output"])) for t in turns)
    messages.append(HumanMessage(question))
    return messages


# -- the strategies: who runs next -------------------------------------------------------------------


async def _round_robin(
    run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: Turns, decisions: int
) -> NodeDecision:
    next_agent = node.agents[len(turns)].agent_id if len(turns) < len(node.agents) else None
    return NodeDecision(next_agent, "each agent in turn")


async def _priority(run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: Turns, decisions: int) -> NodeDecision:
    if len(turns) >= len(node.agents):
        return NodeDecision(None, "every agent has reported")
    next_agent = node.agents[len(turns)].agent_id
    if not turns or turns[-1]["status"] != "success":
        return NodeDecision(next_agent, "next agent by priority")
    messages = supervisor_messages(node, state, turns, "Is the task answered?")
    try:
        verdict, problem = await ask(await run.model(node.supervisor_config), TaskAnswered, messages)
    except Exception as exc:  # an agent is left to ask: its report is worth more than giving up
        pass_control_flow(exc)
        verdict, problem = None, call_failed(exc)
    if isinstance(verdict, TaskAnswered):
        if verdict.answered:
            return NodeDecision(None, f"task answered ({shorten(verdict.reason, 300)})")
        return NodeDecision(next_agent, "next agent by priority")
    warning = f"the supervisor could not judge whether the task is answered ({problem})"
    return NodeDecision(next_agent, f"next agent by priority; {warning}", warning=warning)


async def _adaptive(run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: Turns, decisions: int) -> NodeDecision:
    if decisions >= run.settings.max_iterations:
        return NodeDecision(None, f"max_iterations ({run.settings.max_iterations}) reached")
    choices = [a.agent_id for a in node.agents]
    messages = supervisor_messages(node, state, turns, "Which agent should act next? FINISH when done.")
    try:
        model = await run.model(node.supervisor_config)
        answer, problem = await ask(model, routing_model("NextAgent", choices, many=False), messages)
    except Exception as exc:
        pass_control_flow(exc)
        answer, problem = None, call_failed(exc)
    choice = getattr(answer, "next", None)
    reason = shorten(getattr(answer, "reason", ""), 300)
    if choice is not None and choice != FINISH:
        return NodeDecision(str(choice), reason or "supervisor choice")
    if turns:  # the agents have worked: finishing is legitimate, and what they found is reported
        if choice == FINISH:
            return NodeDecision(None, reason or "supervisor finished")
        warning = f"the supervisor could not choose the next agent ({problem})"
        return NodeDecision(None, f"reporting what the agents found; {warning}", warning=warning)
    # No agent has worked: a node team that "succeeds" now would report nothing but its supervisor's words.
    if choice == FINISH:
        problem = "it chose to finish before any agent had worked"
    why = f"could not route the task to an agent: {problem}"
    return NodeDecision(None, why, failure=shorten(f"supervisor of {node.node_id}: {why}", MAX_ERROR_CHARS))


Decider = Callable[[TeamRun, NodeSpec, NodeTeamState, Turns, int], Awaitable[NodeDecision]]
DECIDERS: dict[NodeStrategy, Decider] = {
    NodeStrategy.round_robin: _round_robin,
    NodeStrategy.priority: _priority,
    NodeStrategy.adaptive: _adaptive,
}


# -- the subgraph ----------------------------------------------------------------------------------


class NodeTeam:
    """The node team subgraph of one team (generic over its nodes)."""

    def __init__(self, nodes: Mapping[str, NodeSpec]) -> None:
        self.nodes = nodes
        self.graph = self._build()

    def _build(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        graph = StateGraph(NodeTeamState, input_schema=NodeTeamInput)
        graph.add_node("turn", self._turn)
        graph.add_node("report", self._report)
        graph.add_edge(START, "turn")
        graph.add_conditional_edges("turn", lambda s: "report" if s.get("finished") else "turn", ["turn", "report"])
        graph.add_edge("report", END)
        return graph.compile(name="node_team")

    async def _turn(self, state: NodeTeamState, config: RunnableConfig) -> dict[str, Any]:
        run = team_run(config)
        node = self.nodes[state["node_id"]]
        turns = state.get("turns", [])
        decisions = state.get("decisions", 0)
        decision, usage = await self._decide(run, node, state, turns, decisions)
        if decision.next_agent is None:
            update: dict[str, Any] = {"finished": True, "decisions": decisions + 1, "usage": usage.as_dict()}
            if decision.failure:
                update["error"] = decision.failure
            return update
        turn, agent_usage = await self._run_agent(run, node, state, decision.next_agent)
        usage = usage + agent_usage
        decisions += 1
        finished = False
        if node.supervisor_config.coordination_strategy is NodeStrategy.round_robin and len(turns) + 1 == len(
            node.agents
        ):
            # Round robin's last decision needs no model: take it in this step rather than a step of its own.
            _, more = await self._decide(run, node, state, [*turns, turn], decisions)
            usage, decisions, finished = usage + more, decisions + 1, True
        return {"turns": [turn], "finished": finished, "decisions": decisions, "usage": usage.as_dict()}

    async def _decide(
        self, run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: Turns, decisions: int
    ) -> tuple[NodeDecision, Usage]:
        """The node supervisor's choice of the next agent (or finish, or fail), announced as an event."""
        decide = DECIDERS[node.supervisor_config.coordination_strategy]
        with metering() as meter:
            decision = await decide(run, node, state, turns, decisions)
        get_stream_writer()(
            PendingEvent(
                EventType.node_supervisor_decision,
                node_id=node.node_id,
                supervisor_id=node_supervisor_id(node.node_id),
                data=decision.event_data(),
            )
        )
        if decision.failure or decision.warning:
            logger.warning("node supervisor could not decide", error=decision.failure, warning=decision.warning)
        return decision, meter.total

    async def _run_agent(
        self, run: TeamRun, node: NodeSpec, state: NodeTeamState, agent_id: str
    ) -> tuple[dict[str, Any], Usage]:
        spec = next(a for a in node.agents if a.agent_id == agent_id)
        prompt = prompts.agent_prompt(spec, node, state["task"], state["context"], state["upstream"])
        metadata = {NODE_ID_KEY: node.node_id, AGENT_ID_KEY: spec.agent_id}
        # Log lines of the agent's model and tool calls carry its ids (LangGraph copies the context).
        with (
            log_context(node_id=node.node_id, agent_id=spec.agent_id),
            run.telemetry.agent(
                node.node_id, spec.agent_id, spec.agent_name, ModelReference(spec.model_provider, spec.model_id)
            ) as step,
            metering() as meter,
            collect_evidence() as evidence,
        ):
            try:
                agent = await run.agent(spec)
                final = await agent.ainvoke(
                    {"messages": [HumanMessage(prompt)]},
                    config={
                        "metadata": metadata,
                        "recursion_limit": 2 * run.settings.max_iterations + 1,
                        # The agent graph has no checkpointer (see ``TeamRun.agent``); the run's "sync"
                        # durability, which it would inherit, waits for checkpoints it never writes.
                        "configurable": {CONFIG_KEY_DURABILITY: "exit"},
                    },
                )
                turn = AgentResult(spec.agent_id, message_text(final["messages"][-1]))
            except Exception as exc:  # the node team carries on without this agent
                pass_control_flow(exc)
                turn = AgentResult(spec.agent_id, "", status="failed", error=error_text(exc, f"agent {agent_id}"))
                logger.warning("agent failed", error=shorten(turn.error, 300), error_type=type(exc).__name__)
            turn.evidence = evidence
            step.status = turn.status
        data: dict[str, Any] = {"message": turn.output, "status": turn.status}
        if turn.error:
            data["error"] = turn.error
        get_stream_writer()(
            PendingEvent(EventType.agent_message, node_id=node.node_id, agent_id=spec.agent_id, data=data)
        )
        return turn.state(), meter.total

    async def _report(self, state: NodeTeamState, config: RunnableConfig) -> dict[str, Any]:
        run = team_run(config)
        node = self.nodes[state["node_id"]]
        turns = state.get("turns", [])
        if state.get("error"):
            return {}  # the node team failed already: there is nothing its supervisor could report
        if turns and all(t["status"] == "failed" for t in turns):
            errors = list(dict.fromkeys(t["error"] for t in turns))
            error = errors[0] if len(errors) == 1 else "every agent failed: " + "; ".join(errors)
            return {"error": shorten(error, MAX_ERROR_CHARS)}
        with metering() as meter:
            try:
                model = await run.model(node.supervisor_config)
                answer = await model.ainvoke(
                    supervisor_messages(node, state, turns, "Report this resource's findings for the task.")
                )
            except Exception as exc:
                pass_control_flow(exc)
                failure = error_text(exc, f"supervisor of {node.node_id}", "could not report the findings")
                return {"error": failure, "usage": meter.total.as_dict()}
        output = message_text(answer)
        get_stream_writer()(
            PendingEvent(
                EventType.node_supervisor_message,
                node_id=node.node_id,
                supervisor_id=node_supervisor_id(node.node_id),
                data={"message": output},
            )
        )
        return {"output": output, "usage": meter.total.as_dict()}
