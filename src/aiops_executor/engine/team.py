"""A topology compiled into LangGraph graphs: the Global Supervisor graph (``global_team``) and the Node Team
subgraph (``node_team``). This module builds; those modules hold what runs in the graphs' nodes, and
``engine.run`` runs them.

The two graphs are built once per team and are generic: which node a Node Team works on, and which agent runs
next, travel in the graph state. Agents (``create_agent``) and their chat models are built on first use and
cached for the run (``state.TeamRun``), so compiling even the largest topology costs milliseconds.

Durability: the run gives the global graph a checkpointer; the node subgraph inherits it (its own checkpoint
namespace per node team), so a resumed run skips the node teams that finished and continues an interrupted
one from its last finished step. Agent graphs are not checkpointed: an agent turn is the unit of resumption.

Events are written with ``get_stream_writer()`` as ``PendingEvent`` objects; the run stamps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from aiops_executor.engine.global_team import GlobalTeam
from aiops_executor.engine.node_team import NodeTeam
from aiops_executor.engine.ordering import OrderingGraph
from aiops_executor.engine.tool_calls import TeamTools
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.tools.registry import ToolRegistry


class CompiledTeam:
    """A validated team turned into runnable graphs. Cheap to build; one per team definition."""

    def __init__(self, spec: TeamSpec, tools: ToolRegistry, tool_settings: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        self.topology = spec.topology
        self.tools = tools
        self.nodes = {n.node_id: n for n in self.topology.nodes}
        self.agent_tools = TeamTools(self.topology, tools, dict(tool_settings or {}))
        self.ordering = OrderingGraph.from_topology(self.topology)
        self.node_team = NodeTeam(self.nodes)
        self.global_team = GlobalTeam(self.topology, self.ordering, self.node_team.graph)
        self.order = self.global_team.order
        self.graph = self.global_team.graph

    def graph_with(self, checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The global graph checkpointed by ``checkpointer`` (node subgraphs inherit it)."""
        return self.graph.copy(update={"checkpointer": checkpointer})

    def suspects(self, results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The ranked suspects of these node results (``engine.evidence.rank_suspects``)."""
        return self.global_team.suspects(results)
