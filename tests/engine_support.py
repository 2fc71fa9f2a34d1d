"""Building blocks for engine tests: a model source over the simulator, a tool registry, team builders."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolCall
from langchain_core.outputs import ChatResult
from langgraph.checkpoint.base import BaseCheckpointSaver
from pydantic import BaseModel, Field

from aiops_executor.engine import CompiledTeam, ExecutionEvent, ExecutionRun, RunRequest, Usage
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.llm.simulator import SimulatorChatModel
from aiops_executor.tools.registry import ToolContext, ToolRegistry, ToolSpec

SIM = "local-sim"
BROKEN = "broken"


class ProviderDown(Exception):
    pass


class BrokenChatModel(BaseChatModel):
    """A model whose provider is down: every call fails."""

    @property
    def _llm_type(self) -> str:
        return "broken"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        raise ProviderDown("connection refused")

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


PLAIN_WORDS = "I would start by looking at the logs of this service."
# What a script can make a call do besides raising: the simulator's answer, plain words (no tool call, as a
# real model may answer where a choice was asked for), or a structured choice of FINISH.
SIM_ANSWER, PLAIN, CHOOSE_FINISH = "sim", "plain", "finish"
Action = str | BaseException


class Script:
    """What a ``ScriptedChatModel`` does, per kind of call, and the calls it received (``calls``).

    A call's kind is the tool its structured output forces (``NextAgent``, ``NextNodes``: routing;
    ``TaskAnswered``: the priority judge; ``StructuredResult``), or ``text`` for any other call (agents,
    node reports, the summary). Each kind maps to an action, or to a list of actions taken call by call, the
    last one repeating: ``"sim"``, ``"plain"``, ``"finish"``, or an exception to raise (the provider erring).
    Kinds not named answer as the simulator does."""

    def __init__(self, **actions: Action | list[Action]) -> None:
        self.actions = actions
        self.calls: Counter[str] = Counter()

    def next(self, kind: str) -> Action:
        self.calls[kind] += 1
        planned = self.actions.get(kind, SIM_ANSWER)
        if not isinstance(planned, list):
            return planned
        return planned[min(self.calls[kind], len(planned)) - 1]


class ScriptedChatModel(SimulatorChatModel):
    """The simulator, except for the calls its ``script`` names (see ``Script``)."""

    script: Any = None

    def respond(self, messages: Sequence[BaseMessage], **kwargs: Any) -> AIMessage:
        functions = [t["function"] for t in kwargs.get("tools") or [] if t.get("type") == "function"]
        forced = self._forced(functions, kwargs.get("tool_choice"))
        action = self.script.next(forced["name"] if forced else "text")
        if isinstance(action, BaseException):
            raise action
        if action == PLAIN:
            return AIMessage(PLAIN_WORDS)
        if action == CHOOSE_FINISH and forced is not None:
            many = forced["parameters"]["properties"]["next"].get("type") == "array"
            args = {"next": ["FINISH"] if many else "FINISH", "reason": "nothing needs doing"}
            return AIMessage("", tool_calls=[ToolCall(name=forced["name"], args=args, id="call_finish")])
        return super().respond(messages, **kwargs)


class SimulatorSource:
    """``local-sim`` serves the simulator (with ``latency_ms``); ``broken`` serves a model that always fails;
    a provider named in ``scripts`` serves a ``ScriptedChatModel`` following that script."""

    def __init__(self, latency_ms: float = 0.0, scripts: dict[str, Script] | None = None) -> None:
        self.latency_ms = latency_ms
        self.scripts = scripts or {}
        self.requested: list[tuple[str, str, dict[str, Any]]] = []

    async def chat_model(self, provider: str, model_id: str, overrides: dict[str, Any]) -> BaseChatModel:
        self.requested.append((provider, model_id, overrides))
        if provider == BROKEN:
            return BrokenChatModel()
        if provider in self.scripts:
            return ScriptedChatModel(model_id=model_id, latency_ms=self.latency_ms, script=self.scripts[provider])
        return SimulatorChatModel(model_id=model_id, latency_ms=self.latency_ms)

    def usage(self) -> Usage:
        return Usage()

    def halt(self) -> None:
        return None


class ProbeArgs(BaseModel):
    url: str = Field(description="the URL to probe")


class WaitArgs(BaseModel):
    url: str = Field(description="ignored")


def tool_registry(
    barrier: asyncio.Barrier | None = None,
    tool_delay: float = 0.0,
    *,
    delays: dict[str, float] | None = None,
    calls: Counter[str] | None = None,
) -> ToolRegistry:
    """``probe`` echoes its URL and node (after ``tool_delay``, or ``delays[node_id]``; counted per node in
    ``calls``); ``rendezvous`` waits until ``barrier`` has every party (concurrency)."""

    async def probe(args: ProbeArgs, context: ToolContext) -> dict[str, Any]:
        if calls is not None:
            calls[context.node_id] += 1
        delay = (delays or {}).get(context.node_id, tool_delay)
        if delay:
            await asyncio.sleep(delay)
        return {"url": args.url, "node": context.node_id, "status": 200, "verdict": "ok", "signals": ["HTTP 200"]}

    async def rendezvous(args: WaitArgs, context: ToolContext) -> dict[str, Any]:
        assert barrier is not None
        await barrier.wait()
        return {"met": barrier.parties, "verdict": "ok", "signals": [f"met {barrier.parties}"]}

    registry = ToolRegistry()
    registry.register(ToolSpec("probe", "Probe a URL.", ProbeArgs, probe))
    registry.register(ToolSpec("rendezvous", "Wait for the other node teams.", WaitArgs, rendezvous, timeout_seconds=5))
    return registry


def agent(agent_id: str, tools: Iterable[str] = ("probe",), provider: str = SIM, **extra: Any) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "agent_name": f"Agent {agent_id}",
        "model_provider": provider,
        "model_id": "sim-1",
        "tools": list(tools),
        **extra,
    }


def node(
    node_id: str,
    agents: list[dict[str, Any]] | None = None,
    strategy: str = "round_robin",
    supervisor_provider: str = SIM,
    **attributes: Any,
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node_name": f"Node {node_id}",
        "node_type": "service",
        "attributes": {"url": f"http://{node_id}.internal/health", **attributes},
        "agents": agents if agents is not None else [agent("a1")],
        "supervisor_config": {
            "model_provider": supervisor_provider,
            "model_id": "sim-1",
            "coordination_strategy": strategy,
        },
    }


def edge(source: str, target: str, relation: str = "depends_on") -> dict[str, Any]:
    return {"source_node_id": source, "target_node_id": target, "relation_type": relation}


def team(
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]] | None = None,
    strategy: str = "hierarchical",
    *,
    max_iterations: int = 50,
    global_provider: str = SIM,
) -> TeamSpec:
    return TeamSpec.model_validate(
        {
            "team_name": "test-team",
            "max_iterations": max_iterations,
            "topology": {
                "nodes": nodes,
                "edges": edges or [],
                "global_supervisor": {
                    "model_provider": global_provider,
                    "model_id": "sim-1",
                    "coordination_strategy": strategy,
                },
                "allow_isolated_nodes": True,
            },
        }
    )


# The checkpointer engine tests run on by default (see the ``checkpointer`` fixture of test_engine.py).
default_checkpointer: contextvars.ContextVar[BaseCheckpointSaver[Any] | None] = contextvars.ContextVar(
    "default_checkpointer", default=None
)


async def run_team(
    spec: TeamSpec,
    *,
    source: SimulatorSource | None = None,
    registry: ToolRegistry | None = None,
    task: str = "Why is checkout slow?",
    execution_id: str | None = None,
    **request: Any,
) -> tuple[ExecutionRun, list[ExecutionEvent]]:
    run = ExecutionRun(
        CompiledTeam(spec, registry or tool_registry()),
        # A fresh thread per run: checkpointers may be shared between tests.
        RunRequest(execution_id or f"exec-{uuid.uuid4().hex}", "team-1", task, **request),
        source or SimulatorSource(),
        checkpointer=default_checkpointer.get(),
    )
    events = [event async for event in run.events()]
    return run, events


def of_type(events: list[ExecutionEvent], kind: str) -> list[ExecutionEvent]:
    return [e for e in events if e.type == kind]
