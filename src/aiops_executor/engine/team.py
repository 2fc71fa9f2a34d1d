"""A topology compiled into LangGraph graphs: the Global Supervisor graph and the Node Team subgraph.

The two graphs are built once per team and are generic: which node a Node Team works on, and which
agent runs next, travel in the graph state. Agents (``create_agent``) and their chat models are built on
first use and cached for the run, so compiling even the largest topology costs milliseconds.

Global graph:  START -> global_supervisor -(Send per node)-> node_team -> global_supervisor ... -> summarize
Node subgraph: START -> turn -> turn ... -> report -> END   (a turn: the supervisor's decision, then that agent)

Durability: the run gives the global graph a checkpointer; the node subgraph inherits it (its own checkpoint
namespace per node team), so a resumed run skips the node teams that finished and continues an interrupted
one from its last finished step. Agent graphs are not checkpointed: an agent turn is the unit of resumption.

``hierarchical`` is dataflow: every node team is dispatched in one step and each waits (in ``_node_team``)
for the node teams it depends on, so it starts the moment they have finished, not when a whole level has.

Events are written with ``get_stream_writer()`` as ``PendingEvent`` objects; the run stamps them.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import operator
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, TypedDict

import structlog
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send, interrupt
from pydantic import BaseModel, Field, create_model

from aiops_executor.core.logging import log_context
from aiops_executor.core.metrics import tool_outcome
from aiops_executor.core.private_apis.graphs import CONFIG_KEY_DURABILITY
from aiops_executor.core.telemetry import ModelReference, Telemetry, default_telemetry
from aiops_executor.engine import prompts
from aiops_executor.engine.approvals import APPROVAL_MARKER, rejection_output
from aiops_executor.engine.events import GLOBAL_SUPERVISOR_ID, EventType, PendingEvent, node_supervisor_id
from aiops_executor.engine.evidence import (
    NO_EVIDENCE,
    NodeEvidence,
    evidence_item,
    no_evidence_reason,
    node_verdict,
    rank_suspects,
    ranking_brief,
)
from aiops_executor.engine.models import ModelSource, Usage, UsageMeter, metering
from aiops_executor.engine.ordering import OrderingGraph
from aiops_executor.engine.results import AgentResult, NodeResult, NodeStatus
from aiops_executor.engine.structured import ask_structured, generate_structured_output
from aiops_executor.engine.topology import AgentSpec, GlobalStrategy, ModelRef, NodeSpec, NodeStrategy, TeamSpec
from aiops_executor.tools.registry import ToolContext, ToolOutcome, ToolRegistry, redact_value, secrets_in
from aiops_executor.tools.verdicts import Verdict, outcome_verdict

FINISH = "FINISH"
NODE_ID_KEY = "aiops_node_id"
AGENT_ID_KEY = "aiops_agent_id"
DEFAULT_AGENT_PROMPT = "You are an SRE agent investigating one resource. Use your tools, then report what you found."
DEFAULT_NODE_SUPERVISOR_PROMPT = "You supervise the agents investigating one resource and report their findings."
DEFAULT_GLOBAL_SUPERVISOR_PROMPT = "You coordinate the teams investigating a system and summarise their findings."
MAX_ERROR_CHARS = 1000

logger = structlog.get_logger(__name__)


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(
        block if isinstance(block, str) else str(block.get("text", "")) for block in content if block is not None
    )


def _short(text: object, limit: int = 300) -> str:
    value = str(text or "")
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _emit(event: PendingEvent) -> None:
    get_stream_writer()(event)


def error_message(exc: BaseException) -> str:
    """What went wrong, in the user's terms: the failure's own message, never its Python class name; "" if none.

    An ``AppError`` (the model runtime's ``ProviderCallError`` among them) carries a user-facing ``message``
    naming the model and endpoints. It is read by name: ``core.errors`` brings the web layer, which the
    engine does without."""
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message.strip():
        message = str(exc)
    return message.strip()


def error_text(exc: BaseException, where: str, failed_to: str = "") -> str:
    """``<where>: [<failed_to>: ]<message>``, bounded; "unexpected error in <where>" when there is no message."""
    message = error_message(exc)
    if failed_to:
        text = f"{where}: {failed_to}: {message or 'unexpected error'}"
    else:
        text = f"{where}: {message}" if message else f"unexpected error in {where}"
    return _short(text, MAX_ERROR_CHARS)


def _call_failure(exc: BaseException, what: str) -> str:
    """``<what>: <message>``, bounded, for a failure described by a whole sentence."""
    return _short(f"{what}: {error_message(exc) or 'unexpected error'}", MAX_ERROR_CHARS)


def _call_failed(exc: BaseException) -> str:
    return _call_failure(exc, "its model call failed")


class TaskAnswered(BaseModel):
    """Whether the agents' reports so far answer the task for this resource."""

    answered: bool = Field(description="true when the task is answered and no further agent is needed")
    reason: str = Field(description="one sentence explaining the decision")


async def _ask(
    model: BaseChatModel, schema: type[BaseModel], messages: list[BaseMessage]
) -> tuple[BaseModel | None, str]:
    """The model's structured answer, or None and why the answer could not be read as one.

    A failing call raises. Real models often answer in plain words where a choice was asked for; that is
    not a choice, and the caller must not read it as one (e.g. as FINISH)."""
    answer = await ask_structured(model, schema, messages)
    return (answer.value if isinstance(answer.value, schema) else None), answer.problem


def _routing_model(name: str, choices: list[str], *, many: bool) -> type[BaseModel]:
    """A schema whose ``next`` field is one of ``choices`` (or a list of them) plus ``FINISH``."""
    options = Literal[tuple([*choices, FINISH])]  # type: ignore[valid-type]
    field_type: Any = list[options] if many else options  # type: ignore[valid-type]
    description = (
        "the ids to run next (any number at once), or FINISH when done"
        if many
        else "the id to run next, or FINISH when done"
    )
    return create_model(
        name,
        __doc__=f"Choose what runs next. Options: {', '.join(choices)}; or {FINISH}.",
        next=(field_type, Field(description=description)),
        reason=(str, Field(description="one sentence explaining the choice")),
    )


# ----------------------------------------------------------------------------------------------- state


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return {**left, **right}


def _add_usage(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return (Usage.from_dict(left) + Usage.from_dict(right)).as_dict()


class TeamState(TypedDict, total=False):
    task: str
    context: dict[str, Any]
    node_results: Annotated[dict[str, dict[str, Any]], _merge]
    next_nodes: list[str]
    decisions: int
    summary: str
    structured: dict[str, Any] | None
    # Why the run fails although its graph finished (the global supervisor could not summarise, ...).
    failure: str
    # Why the adaptive global supervisor could not decide; from then on node teams run in dependency order.
    routing_fallback: str
    # The global supervisor's own model calls (routing, summary, structured output); node teams carry theirs.
    supervisor_usage: Annotated[dict[str, Any], _add_usage]


class NodeTeamInput(TypedDict):
    node_id: str
    task: str
    context: dict[str, Any]
    upstream: dict[str, str]


class NodeTeamState(NodeTeamInput, total=False):
    turns: Annotated[list[dict[str, Any]], operator.add]
    finished: bool  # the supervisor decided the node team is done: report
    decisions: int
    answered: bool
    output: str
    error: str  # the node team could not do its work: it fails with this reason
    usage: Annotated[dict[str, Any], _add_usage]


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


# ----------------------------------------------------------------------------------------------- run inputs


@dataclass(frozen=True)
class RunSettings:
    max_iterations: int = 50
    output_schema: dict[str, Any] | None = None
    stream_tokens: bool = True


class Dataflow:
    """The node teams finished so far in this run, as futures a dependent node team can wait on."""

    def __init__(self) -> None:
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def _future(self, node_id: str) -> asyncio.Future[dict[str, Any]]:
        future = self._results.get(node_id)
        if future is None:
            future = self._results[node_id] = asyncio.get_running_loop().create_future()
        return future

    def finish(self, node_id: str, result: dict[str, Any]) -> None:
        future = self._future(node_id)
        if not future.done():
            future.set_result(result)

    def pause(self, node_id: str, signal: BaseException) -> None:
        """The node team stopped for LangGraph's control flow (an interrupt): its dependents stop too, with the
        same signal, rather than wait for a result this attempt will not produce."""
        future = self._future(node_id)
        if not future.done():
            future.set_exception(signal)

    async def wait(self, node_ids: list[str]) -> dict[str, dict[str, Any]]:
        return {node_id: await self._future(node_id) for node_id in node_ids}


def model_tool_name(name: str) -> str:
    """The name a model calls a tool by. Function names may not contain dots for most providers (OpenAI's
    ``^[a-zA-Z0-9_-]{1,64}$``), while tools of MCP servers are named ``<server>.<tool>``: the dot becomes ``__``.
    Events, results and the audit log keep the tool's own name."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name.replace(".", "__"))
    return safe[:64]


@dataclass
class TeamRun:
    """Everything one run's graph nodes need, shared by the global graph and every node team.

    One per attempt: a resumed run builds a new one and refills ``dataflow`` from the checkpoint.
    """

    team: CompiledTeam
    models: ModelSource
    settings: RunSettings
    telemetry: Telemetry = field(default_factory=default_telemetry)
    dataflow: Dataflow = field(default_factory=Dataflow)
    execution_id: str = ""
    # The run's input context, which tools may read (the alert that started it).
    context: Mapping[str, Any] = field(default_factory=dict)
    # Node teams an earlier attempt announced finished (node id -> result): not run again (see ``Resume``).
    announced: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What each node team's model calls used in this attempt, for node teams stopped before they finished.
    node_meters: dict[str, UsageMeter] = field(default_factory=dict)
    _models: dict[tuple[str, str, str], BaseChatModel] = field(default_factory=dict)
    _agents: dict[tuple[Any, ...], Runnable[Any, Any]] = field(default_factory=dict)

    async def model(self, ref: ModelRef, overrides: Mapping[str, Any] | None = None) -> BaseChatModel:
        params = {k: v for k, v in (overrides or {}).items() if v is not None}
        key = (ref.model_provider, ref.model_id, json.dumps(params, sort_keys=True))
        model = self._models.get(key)
        if model is None:
            model = await self.models.chat_model(ref.model_provider, ref.model_id, params)
            self._models[key] = model
        return model

    async def agent(self, agent: AgentSpec) -> Runnable[Any, Any]:
        """The agent graph for this definition. Agents defined alike (model, sampling, tools, prompt) share
        one graph, whichever node they serve: the node reaches the tools through the call's metadata."""
        pauses = self.team.agent_may_pause(agent)
        key = (
            agent.model_provider,
            agent.model_id,
            agent.temperature,
            agent.max_tokens,
            tuple(agent.tools),
            agent.system_prompt,
            pauses,
        )
        built = self._agents.get(key)
        if built is None:
            model = await self.model(agent, {"temperature": agent.temperature, "max_tokens": agent.max_tokens})
            tools = [self.team.tool(name) for name in agent.tools]
            # checkpointer=False: an agent's inner steps are not checkpointed (the node team's are) -- except for
            # an agent that may wait for an approval: it checkpoints (when it pauses), so that on resume its
            # model calls and the tool calls it has finished are not made again.
            built = create_agent(
                model,
                tools,
                system_prompt=agent.system_prompt or DEFAULT_AGENT_PROMPT,
                checkpointer=None if pauses else False,
            )
            self._agents[key] = built
        return built


# ----------------------------------------------------------------------------------------------- the team


class CompiledTeam:
    """A validated team turned into runnable graphs. Cheap to build; one per team definition."""

    def __init__(self, spec: TeamSpec, tools: ToolRegistry, tool_settings: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.topology = spec.topology
        self.tools = tools
        self.tool_settings = dict(tool_settings or {})
        self.nodes = {n.node_id: n for n in self.topology.nodes}
        self._tool_contexts = {
            n.node_id: ToolContext(n.node_id, n.node_type, n.attributes, self.tool_settings)
            for n in self.topology.nodes
        }
        self._secrets = {n.node_id: secrets_in(n.attributes) for n in self.topology.nodes}
        self._agent_specs = {(n.node_id, a.agent_id): a for n in self.topology.nodes for a in n.agents}
        self._tools: dict[str, BaseTool] = {}
        self.ordering = OrderingGraph.from_topology(self.topology)
        self.order = self.ordering.topological_order()
        self.node_graph = self._build_node_graph()
        self.graph = self._build_global_graph()

    def needs_approval(self, node_id: str, agent_id: str, tool: str) -> bool:
        spec = self.tools.get(tool)
        if spec is not None and spec.approval_required:
            return True
        agent = self._agent_specs.get((node_id, agent_id))
        return agent is not None and tool in agent.approval_required_tools

    def agent_may_pause(self, agent: AgentSpec) -> bool:
        if agent.approval_required_tools:
            return True
        return any((spec := self.tools.get(name)) is not None and spec.approval_required for name in agent.tools)

    @property
    def dataflow(self) -> bool:
        return self.topology.global_supervisor.coordination_strategy is GlobalStrategy.hierarchical

    def graph_with(self, checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The global graph checkpointed by ``checkpointer`` (node subgraphs inherit it)."""
        return self.graph.copy(update={"checkpointer": checkpointer})

    # -- tools -----------------------------------------------------------------------------------

    def tool(self, name: str) -> BaseTool:
        """The LangChain tool for ``name``, built once per team. The node and agent it works for come from the
        metadata of the agent call that invokes it (see ``_run_agent``)."""
        built = self._tools.get(name)
        if built is not None:
            return built
        spec = self.tools.get(name)
        if spec is None:
            raise LookupError(f"tool {name!r} is not registered")
        registry = self.tools

        async def call(**arguments: Any) -> str:
            config = ensure_config()
            metadata = config.get("metadata", {})
            node = self.nodes[metadata[NODE_ID_KEY]]
            run = _team_run(config)
            context = replace(
                self._tool_contexts[node.node_id],
                execution_id=run.execution_id,
                agent_id=metadata[AGENT_ID_KEY],
                run_context=run.context,
            )
            agent_id = metadata[AGENT_ID_KEY]
            rejection: dict[str, Any] | None = None
            if self.needs_approval(node.node_id, agent_id, name):
                # Pauses the run until a person decides (see ``engine.approvals``); on resume this returns the
                # decision. Nothing before this line has side effects: re-running it on resume is harmless.
                asked = {
                    APPROVAL_MARKER: True,
                    "tool": name,
                    "input": redact_value(arguments, self._secrets[node.node_id]),
                    "node_id": node.node_id,
                    "agent_id": agent_id,
                }
                rejection = rejection_output(name, interrupt(asked))
            started = time.perf_counter()
            call_id = uuid.uuid4().hex[:16]
            if rejection is not None:
                judgement = outcome_verdict("error", rejection, builtin=False)
                outcome = ToolOutcome("error", rejection, verdict=judgement.verdict, signals=judgement.signals)
            else:
                with run.telemetry.tool_call(name, node.node_id, agent_id, _TOOL_CALL_ID.get()) as step:
                    outcome = await registry.invoke(name, arguments, context)
                    step.status = tool_outcome(outcome.status, outcome.output)
            _emit(
                PendingEvent(
                    EventType.tool_call,
                    node_id=node.node_id,
                    agent_id=metadata[AGENT_ID_KEY],
                    data={
                        "tool": name,
                        # A model may copy a credential from the node's attributes into an argument.
                        "input": redact_value(arguments, self._secrets[node.node_id]),
                        "output": outcome.output,
                        "status": outcome.status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                        "call_id": call_id,
                        "verdict": outcome.verdict.value,
                        "signals": list(outcome.signals),
                    },
                )
            )
            collected = _TURN_EVIDENCE.get()
            if collected is not None:
                error_code = outcome.output.get("error_code")
                item = evidence_item(call_id, name, outcome.verdict, outcome.signals, error_code, outcome.observed)
                collected.append(item)
            return json.dumps(outcome.output, ensure_ascii=False, default=str)

        # A plain JSON schema: the registry validates, so bad arguments reach the agent as a readable result.
        built = _CallIdTool.from_function(
            coroutine=call, name=model_tool_name(name), description=spec.description, args_schema=spec.json_schema()
        )
        self._tools[name] = built
        return built

    # -- node team -------------------------------------------------------------------------------

    def _build_node_graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        # One step per agent turn (decision + agent), so one checkpoint per turn: a resumed node team continues
        # after its last finished turn, and durability costs one checkpoint write per turn, not two.
        graph = StateGraph(NodeTeamState, input_schema=NodeTeamInput)
        graph.add_node("turn", self._node_turn)
        graph.add_node("report", self._node_report)
        graph.add_edge(START, "turn")
        graph.add_conditional_edges("turn", lambda s: "report" if s.get("finished") else "turn", ["turn", "report"])
        graph.add_edge("report", END)
        return graph.compile(name="node_team")

    async def _node_turn(self, state: NodeTeamState, config: RunnableConfig) -> dict[str, Any]:
        run = _team_run(config)
        node = self.nodes[state["node_id"]]
        turns = state.get("turns", [])
        decisions = state.get("decisions", 0)
        decision, usage = await self._node_decision(run, node, state, turns, decisions)
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
            _, more = await self._node_decision(run, node, state, [*turns, turn], decisions)
            usage, decisions, finished = usage + more, decisions + 1, True
        return {"turns": [turn], "finished": finished, "decisions": decisions, "usage": usage.as_dict()}

    async def _node_decision(
        self, run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: list[dict[str, Any]], decisions: int
    ) -> tuple[NodeDecision, Usage]:
        """The node supervisor's choice of the next agent (or finish, or fail), announced as an event."""
        strategy = node.supervisor_config.coordination_strategy
        with metering() as meter:
            if strategy is NodeStrategy.round_robin:
                next_agent = node.agents[len(turns)].agent_id if len(turns) < len(node.agents) else None
                decision = NodeDecision(next_agent, "each agent in turn")
            elif strategy is NodeStrategy.priority:
                decision = await self._priority_choice(run, node, state, turns)
            elif decisions >= run.settings.max_iterations:
                decision = NodeDecision(None, f"max_iterations ({run.settings.max_iterations}) reached")
            else:
                decision = await self._adaptive_choice(run, node, state, turns)
        _emit(
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

    async def _priority_choice(
        self, run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: list[dict[str, Any]]
    ) -> NodeDecision:
        if len(turns) >= len(node.agents):
            return NodeDecision(None, "every agent has reported")
        next_agent = node.agents[len(turns)].agent_id
        if not turns or turns[-1]["status"] != "success":
            return NodeDecision(next_agent, "next agent by priority")
        messages = self._node_supervisor_messages(node, state, turns, "Is the task answered?")
        try:
            verdict, problem = await _ask(await run.model(node.supervisor_config), TaskAnswered, messages)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # an agent is left to ask: its report is worth more than giving up
            verdict, problem = None, _call_failed(exc)
        if isinstance(verdict, TaskAnswered):
            if verdict.answered:
                return NodeDecision(None, f"task answered ({_short(verdict.reason)})")
            return NodeDecision(next_agent, "next agent by priority")
        warning = f"the supervisor could not judge whether the task is answered ({problem})"
        return NodeDecision(next_agent, f"next agent by priority; {warning}", warning=warning)

    async def _adaptive_choice(
        self, run: TeamRun, node: NodeSpec, state: NodeTeamState, turns: list[dict[str, Any]]
    ) -> NodeDecision:
        choices = [a.agent_id for a in node.agents]
        messages = self._node_supervisor_messages(node, state, turns, "Which agent should act next? FINISH when done.")
        try:
            model = await run.model(node.supervisor_config)
            answer, problem = await _ask(model, _routing_model("NextAgent", choices, many=False), messages)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            answer, problem = None, _call_failed(exc)
        choice = getattr(answer, "next", None)
        reason = _short(getattr(answer, "reason", ""))
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
        return NodeDecision(None, why, failure=_short(f"supervisor of {node.node_id}: {why}", MAX_ERROR_CHARS))

    def _node_supervisor_messages(
        self, node: NodeSpec, state: NodeTeamState, turns: list[dict[str, Any]], question: str
    ) -> list[BaseMessage]:
        messages: list[BaseMessage] = [
            SystemMessage(node.supervisor_config.system_prompt or DEFAULT_NODE_SUPERVISOR_PROMPT),
            HumanMessage(prompts.node_supervisor_brief(node, state["task"], state["context"])),
        ]
        messages.extend(AIMessage(prompts.report(t["agent_id"], t["output"])) for t in turns)
        messages.append(HumanMessage(question))
        return messages

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
        ):
            evidence: list[dict[str, Any]] = []
            collecting = _TURN_EVIDENCE.set(evidence)
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
                output = _text(final["messages"][-1])
                turn = AgentResult(spec.agent_id, output)
            except GraphBubbleUp:
                raise  # LangGraph's control flow (interrupts), not a failure of the agent
            except Exception as exc:  # the node team carries on without this agent
                turn = AgentResult(spec.agent_id, "", status="failed", error=error_text(exc, f"agent {agent_id}"))
                logger.warning("agent failed", error=_short(turn.error), error_type=type(exc).__name__)
            finally:
                _TURN_EVIDENCE.reset(collecting)
            turn.evidence = evidence
            step.status = turn.status
        data: dict[str, Any] = {"message": turn.output, "status": turn.status}
        if turn.error:
            data["error"] = turn.error
        _emit(PendingEvent(EventType.agent_message, node_id=node.node_id, agent_id=spec.agent_id, data=data))
        return turn.state(), meter.total

    async def _node_report(self, state: NodeTeamState, config: RunnableConfig) -> dict[str, Any]:
        run = _team_run(config)
        node = self.nodes[state["node_id"]]
        turns = state.get("turns", [])
        if state.get("error"):
            return {}  # the node team failed already: there is nothing its supervisor could report
        if turns and all(t["status"] == "failed" for t in turns):
            errors = list(dict.fromkeys(t["error"] for t in turns))
            error = errors[0] if len(errors) == 1 else "every agent failed: " + "; ".join(errors)
            return {"error": _short(error, MAX_ERROR_CHARS)}
        with metering() as meter:
            try:
                model = await run.model(node.supervisor_config)
                answer = await model.ainvoke(
                    self._node_supervisor_messages(node, state, turns, "Report this resource's findings for the task.")
                )
            except GraphBubbleUp:
                raise
            except Exception as exc:
                failure = error_text(exc, f"supervisor of {node.node_id}", "could not report the findings")
                return {"error": failure, "usage": meter.total.as_dict()}
        output = _text(answer)
        _emit(
            PendingEvent(
                EventType.node_supervisor_message,
                node_id=node.node_id,
                supervisor_id=node_supervisor_id(node.node_id),
                data={"message": output},
            )
        )
        return {"output": output, "usage": meter.total.as_dict()}

    # -- global supervisor -----------------------------------------------------------------------

    def _build_global_graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        graph = StateGraph(TeamState)
        graph.add_node("global_supervisor", self._global_supervisor)
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
                skipped |= _finish_node(NodeResult(node_id, NodeStatus.skipped, reason))
        return skipped

    def _ready(self, results: Mapping[str, Any]) -> list[str]:
        return [
            node_id
            for node_id in self.order
            if node_id not in results and all(up in results for up in self.ordering.upstream(node_id))
        ]

    async def _global_supervisor(self, state: TeamState, config: RunnableConfig) -> dict[str, Any]:
        run = _team_run(config)
        results = dict(state.get("node_results", {}))
        decisions = state.get("decisions", 0)
        strategy = self.topology.global_supervisor.coordination_strategy
        skipped: dict[str, dict[str, Any]] = {}
        if strategy is not GlobalStrategy.parallel:
            skipped = self._skip_blocked(results)
            results.update(skipped)
        ready = self._ready(results)
        reason = ""
        fallback = state.get("routing_fallback")
        meter = UsageMeter()
        if strategy is GlobalStrategy.parallel:
            next_nodes = list(self.order) if decisions == 0 else []
            reason = "every node team at once"
        elif strategy is GlobalStrategy.hierarchical:
            next_nodes = [node_id for node_id in self.order if node_id not in results]
            reason = "dataflow: each node team starts as soon as the node teams it depends on have finished"
        elif strategy is GlobalStrategy.sequential:
            next_nodes, reason = ready[:1], "next node in dependency order"
        elif decisions >= run.settings.max_iterations:
            next_nodes, reason = [], f"max_iterations ({run.settings.max_iterations}) reached"
        elif ready:
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
        else:
            next_nodes = []
        if not next_nodes:
            reason = reason if strategy is GlobalStrategy.adaptive and ready else "every node team has finished"
            for node_id in self.order:
                if node_id not in results:
                    why = f"skipped: not dispatched by the global supervisor ({reason})"
                    skipped |= _finish_node(NodeResult(node_id, NodeStatus.skipped, why))
        data: dict[str, Any] = {
            "decision": f"run {', '.join(next_nodes)}: {reason}" if next_nodes else f"finish: {reason}",
            "next_nodes": next_nodes,
        }
        if fallback and next_nodes:
            data["warning"] = fallback
        _emit(PendingEvent(EventType.global_supervisor_decision, supervisor_id=GLOBAL_SUPERVISOR_ID, data=data))
        for node_id, body in skipped.items():
            run.dataflow.finish(node_id, body)
        update: dict[str, Any] = {
            "next_nodes": next_nodes,
            "decisions": decisions + 1,
            "node_results": skipped,
            "supervisor_usage": meter.total.as_dict(),
        }
        if fallback:
            update["routing_fallback"] = fallback
        return update

    async def _adaptive_nodes(
        self, run: TeamRun, state: TeamState, results: Mapping[str, Any], ready: list[str]
    ) -> tuple[list[str], str, str]:
        """The node teams the global supervisor picks among ``ready`` and why; or, when it cannot decide,
        no pick and the problem (the third item)."""
        messages = self._global_messages(state, results, "Which node teams should run next? FINISH when done.")
        try:
            model = await run.model(self.topology.global_supervisor)
            answer, problem = await _ask(model, _routing_model("NextNodes", ready, many=True), messages)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            return [], "", _call_failed(exc)
        if answer is None:
            return [], "", problem
        chosen = getattr(answer, "next", None) or []
        picked = list(dict.fromkeys(str(c) for c in chosen if c != FINISH and c in ready))
        reason = _short(getattr(answer, "reason", ""))
        if picked:
            return picked, reason or "supervisor choice", ""
        if any(r["status"] != NodeStatus.skipped for r in results.values()):
            return [], reason or "supervisor finished", ""  # node teams have reported: finishing is its call
        return [], "", "it chose to finish before any node team had run"

    def _global_messages(
        self, state: TeamState, results: Mapping[str, Any], question: str, *, ranking: bool = False
    ) -> list[BaseMessage]:
        messages: list[BaseMessage] = [
            SystemMessage(self.topology.global_supervisor.system_prompt or DEFAULT_GLOBAL_SUPERVISOR_PROMPT),
            HumanMessage(prompts.global_supervisor_brief(state["task"], state["context"], self.topology.nodes)),
        ]
        messages.extend(AIMessage(text) for text in self._reports(results))
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

    @staticmethod
    def _reports(results: Mapping[str, Any]) -> list[str]:
        return [
            prompts.report(node_id, f"({r['status']}) {r['output'] or r.get('error') or ''}")
            for node_id, r in results.items()
            if r["status"] != NodeStatus.skipped
        ]

    async def _node_team(self, send: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        node_id = send["node_id"]
        run = _team_run(config)
        announced = run.announced.get(node_id)
        if announced is not None:  # finished in an earlier attempt, which was lost before checkpointing it
            run.dataflow.finish(node_id, announced)
            return {"node_results": {node_id: announced}}
        if self.dataflow:
            upstream = await run.dataflow.wait(self.ordering.upstream(node_id))
            blocked = [up for up, body in upstream.items() if body["status"] != NodeStatus.success]
            if blocked:
                reason = f"skipped: upstream {', '.join(blocked)} did not succeed"
                body = _finish_node(NodeResult(node_id, NodeStatus.skipped, reason))
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
            except GraphBubbleUp as signal:
                run.dataflow.pause(node_id, signal)
                raise
            except Exception as exc:
                error = error_text(exc, f"node team {node_id}")
                result = NodeResult(node_id, NodeStatus.failed, "", error=error, usage=meter.total)
                logger.warning("node team broke", error_type=type(exc).__name__)
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            finished = {"status": result.status.value, "duration_ms": duration_ms}
            if result.status is NodeStatus.failed:
                logger.warning("node team finished", **finished, error=_short(result.error))
            else:
                failed = sum(1 for a in result.agents if a.status == "failed")
                logger.info("node team finished", **finished, failed_agents=failed)
            step.status = result.status.value
            body = _finish_node(result)
            run.dataflow.finish(node_id, body[node_id])
            return {"node_results": body}

    async def _summarize(self, state: TeamState, config: RunnableConfig) -> dict[str, Any]:
        run = _team_run(config)
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
                    self._global_messages(state, results, "Summarise the findings for the task.", ranking=True)
                )
            except GraphBubbleUp:
                raise
            except Exception as exc:
                failure = _call_failure(exc, "the global supervisor could not summarise the findings")
                return {"failure": failure, "supervisor_usage": meter.total.as_dict()}
            summary = _text(answer)
            _emit(
                PendingEvent(
                    EventType.global_supervisor_message, supervisor_id=GLOBAL_SUPERVISOR_ID, data={"message": summary}
                )
            )
            update["summary"] = summary
            if run.settings.output_schema is not None:
                try:
                    outcome = await generate_structured_output(
                        model,
                        run.settings.output_schema,
                        self.topology.global_supervisor.system_prompt or DEFAULT_GLOBAL_SUPERVISOR_PROMPT,
                        prompts.global_supervisor_brief(state["task"], state["context"], self.topology.nodes),
                        [prompts.report(GLOBAL_SUPERVISOR_ID, summary), *self._reports(results)],
                    )
                except GraphBubbleUp:
                    raise
                except Exception as exc:
                    update["failure"] = _call_failure(
                        exc, "the global supervisor could not produce the structured output"
                    )
                else:
                    update["structured"] = {
                        "valid": outcome.valid,
                        "output": outcome.output,
                        "errors": outcome.errors,
                        "attempts": outcome.attempts,
                    }
        update["supervisor_usage"] = meter.total.as_dict()
        return update


def _finish_node(result: NodeResult) -> dict[str, dict[str, Any]]:
    """Announces a finished node and returns it as a state update."""
    body = result.as_dict()
    _emit(
        PendingEvent(
            EventType.node_complete,
            node_id=result.node_id,
            data={"status": result.status.value, "result": body, "usage": body["usage"]},
        )
    )
    return {result.node_id: body}


RUN_KEY = "aiops_team_run"
# The id the model gave the tool call being run (its span's gen_ai.tool.call.id); None outside one.
_TOOL_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("aiops_tool_call_id", default=None)
# Where the tool calls of the agent turn being run put their evidence (set by ``_run_agent``).
_TURN_EVIDENCE: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "aiops_turn_evidence", default=None
)


class _CallIdTool(StructuredTool):
    """A tool that knows the id of the call it answers: LangChain hands a JSON-schema tool its arguments only,
    so the id of the model's tool call (``{"type": "tool_call", "id": ...}``) is passed on in a context
    variable."""

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        call_id = input.get("id") if isinstance(input, dict) and input.get("type") == "tool_call" else None
        token = _TOOL_CALL_ID.set(call_id if isinstance(call_id, str) else None)
        try:
            return await super().ainvoke(input, config, **kwargs)
        finally:
            _TOOL_CALL_ID.reset(token)


def _team_run(config: RunnableConfig) -> TeamRun:
    run = config.get("configurable", {}).get(RUN_KEY)
    if not isinstance(run, TeamRun):
        raise RuntimeError("the team graph must be run through engine.run")
    return run
