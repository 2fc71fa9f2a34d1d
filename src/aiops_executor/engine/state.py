"""What the team's graphs carry: their states, and the run (``TeamRun``) every graph node reaches through its
config -- models and agents built once per run, the dataflow between node teams, and the run's settings."""

from __future__ import annotations

import asyncio
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig

from aiops_executor.core.telemetry import Telemetry, default_telemetry
from aiops_executor.engine.models import ModelSource, Usage, UsageMeter
from aiops_executor.engine.prompts import DEFAULT_AGENT_PROMPT
from aiops_executor.engine.topology import AgentSpec, ModelRef

if TYPE_CHECKING:
    from aiops_executor.engine.team import CompiledTeam

RUN_KEY = "aiops_team_run"


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
        tools = self.team.agent_tools
        pauses = tools.agent_may_pause(agent)
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
            # checkpointer=False: an agent's inner steps are not checkpointed (the node team's are) -- except for
            # an agent that may wait for an approval: it checkpoints (when it pauses), so that on resume its
            # model calls and the tool calls it has finished are not made again.
            built = create_agent(
                model,
                [tools.tool(name) for name in agent.tools],
                system_prompt=agent.system_prompt or DEFAULT_AGENT_PROMPT,
                checkpointer=None if pauses else False,
            )
            self._agents[key] = built
        return built


def team_run(config: RunnableConfig) -> TeamRun:
    run = config.get("configurable", {}).get(RUN_KEY)
    if not isinstance(run, TeamRun):
        raise RuntimeError("the team graph must be run through engine.run")
    return run
