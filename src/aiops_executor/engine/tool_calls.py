"""The team's tools as LangChain tools: one per registered tool, shared by every agent that lists it.

A call finds the node and agent it works for in the metadata of the agent call (``NODE_ID_KEY``,
``AGENT_ID_KEY``), asks for a person's approval where the team or the tool says so (pausing the run), runs the
registry's tool with the node's context, announces a ``tool_call`` event and adds the call's evidence to the
agent turn's (``collect_evidence``)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.config import get_stream_writer
from langgraph.types import interrupt

from aiops_executor.core.metrics import tool_outcome
from aiops_executor.engine.approvals import APPROVAL_MARKER, rejection_output
from aiops_executor.engine.events import EventType, PendingEvent
from aiops_executor.engine.evidence import evidence_item
from aiops_executor.engine.state import team_run
from aiops_executor.engine.topology import AgentSpec, Topology
from aiops_executor.tools.registry import ToolContext, ToolOutcome, ToolRegistry, redact_value, secrets_in
from aiops_executor.tools.verdicts import outcome_verdict

NODE_ID_KEY = "aiops_node_id"
AGENT_ID_KEY = "aiops_agent_id"

# The id the model gave the tool call being run (its span's gen_ai.tool.call.id); None outside one.
_TOOL_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("aiops_tool_call_id", default=None)
# Where the tool calls of the agent turn being run put their evidence (set by ``collect_evidence``).
_TURN_EVIDENCE: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "aiops_turn_evidence", default=None
)


def model_tool_name(name: str) -> str:
    """The name a model calls a tool by. Function names may not contain dots for most providers (OpenAI's
    ``^[a-zA-Z0-9_-]{1,64}$``), while tools of MCP servers are named ``<server>.<tool>``: the dot becomes ``__``.
    Events, results and the audit log keep the tool's own name."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", name.replace(".", "__"))
    return safe[:64]


@contextlib.contextmanager
def collect_evidence() -> Iterator[list[dict[str, Any]]]:
    """The evidence of the tool calls made within, in call order."""
    evidence: list[dict[str, Any]] = []
    token = _TURN_EVIDENCE.set(evidence)
    try:
        yield evidence
    finally:
        _TURN_EVIDENCE.reset(token)


class TeamTools:
    """The tools of one team, built once per team."""

    def __init__(self, topology: Topology, registry: ToolRegistry, settings: Mapping[str, Any]) -> None:
        self.registry = registry
        self.nodes = {n.node_id: n for n in topology.nodes}
        self._contexts = {
            n.node_id: ToolContext(n.node_id, n.node_type, n.attributes, dict(settings)) for n in topology.nodes
        }
        self._secrets = {n.node_id: secrets_in(n.attributes) for n in topology.nodes}
        self._agent_specs = {(n.node_id, a.agent_id): a for n in topology.nodes for a in n.agents}
        self._built: dict[str, BaseTool] = {}

    def needs_approval(self, node_id: str, agent_id: str, tool: str) -> bool:
        spec = self.registry.get(tool)
        if spec is not None and spec.approval_required:
            return True
        agent = self._agent_specs.get((node_id, agent_id))
        return agent is not None and tool in agent.approval_required_tools

    def agent_may_pause(self, agent: AgentSpec) -> bool:
        if agent.approval_required_tools:
            return True
        return any((spec := self.registry.get(name)) is not None and spec.approval_required for name in agent.tools)

    def tool(self, name: str) -> BaseTool:
        """The LangChain tool for ``name``, built once per team."""
        built = self._built.get(name)
        if built is not None:
            return built
        spec = self.registry.get(name)
        if spec is None:
            raise LookupError(f"tool {name!r} is not registered")

        async def call(**arguments: Any) -> str:
            return await self._call(name, arguments)

        # A plain JSON schema: the registry validates, so bad arguments reach the agent as a readable result.
        built = _CallIdTool.from_function(
            coroutine=call, name=model_tool_name(name), description=spec.description, args_schema=spec.json_schema()
        )
        self._built[name] = built
        return built

    async def _call(self, name: str, arguments: dict[str, Any]) -> str:
        config = ensure_config()
        metadata = config.get("metadata", {})
        node = self.nodes[metadata[NODE_ID_KEY]]
        agent_id = metadata[AGENT_ID_KEY]
        run = team_run(config)
        context = replace(
            self._contexts[node.node_id], execution_id=run.execution_id, agent_id=agent_id, run_context=run.context
        )
        # A model may copy a credential from the node's attributes into an argument.
        shown_input = redact_value(arguments, self._secrets[node.node_id])
        rejection: dict[str, Any] | None = None
        if self.needs_approval(node.node_id, agent_id, name):
            # Pauses the run until a person decides (see ``engine.approvals``); on resume this returns the
            # decision. Nothing before this line has side effects: re-running it on resume is harmless.
            asked = {
                APPROVAL_MARKER: True,
                "tool": name,
                "input": shown_input,
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
                outcome = await self.registry.invoke(name, arguments, context)
                step.status = tool_outcome(outcome.status, outcome.output)
        get_stream_writer()(
            PendingEvent(
                EventType.tool_call,
                node_id=node.node_id,
                agent_id=agent_id,
                data={
                    "tool": name,
                    "input": shown_input,
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
            collected.append(
                evidence_item(call_id, name, outcome.verdict, outcome.signals, error_code, outcome.observed)
            )
        return json.dumps(outcome.output, ensure_ascii=False, default=str)


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
