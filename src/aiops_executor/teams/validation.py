"""Whole-topology rules of a team (contract: Teams, validation). Pure: no database, no I/O.

``validate_team`` checks a parsed ``TeamSpec`` against a snapshot of the LLM configuration (``ModelCatalog``,
loaded once by the service) and the names of the registered tools, and reports every problem at once. Each
problem is an ``Issue`` with a stable UPPER_SNAKE ``code``, a message and a JSON-ish ``path`` into the request
body (``topology.nodes[3].agents[0].model_id``, ``topology.edges[2].target_node_id``, ``timeout_seconds``).

Errors make a team invalid; warnings do not. Decisions where the contract is silent:

- A node is *isolated* when no edge of any relation type names it (as source or target). Isolation is an
  error only when the topology has more than one node and ``allow_isolated_nodes`` is false.
- ``model_provider`` is matched as a provider id first, then as a live provider's name (as ``llm.service``
  resolves providers). A deleted provider answers ``PROVIDER_NOT_FOUND``; an inactive one ``PROVIDER_INACTIVE``.
- A ``deprecated`` model is an error; a model in ``maintenance`` is a warning (it may be back by run time).
  Embedding models cannot chat: ``MODEL_TYPE_UNSUPPORTED``.
- An agent with tools needs ``function_calling``. A supervisor needs ``structured_output`` or
  ``function_calling`` to return its decisions reliably: missing both is an error for the ``adaptive``
  strategy (the model itself picks what runs next) and a warning for the others (the order is fixed, the
  model only writes messages and summaries).
- Repeated edges (same source, target and relation type) and tools listed twice by one agent are warnings.
- The depth limit is checked only when the ordering edges are acyclic (a cycle has no depth).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from aiops_executor.engine.ordering import OrderingGraph
from aiops_executor.engine.topology import (
    MAX_AGENTS_PER_NODE,
    MAX_DEPTH,
    MAX_NODES,
    MAX_TIMEOUT_SECONDS,
    GlobalStrategy,
    ModelRef,
    NodeStrategy,
    TeamSpec,
)
from aiops_executor.llm.catalog import ModelCatalog, ModelEntry, ModelLookup
from aiops_executor.llm.schemas import Capability, ModelStatus, ModelType

MIN_TIMEOUT_SECONDS = 1


class IssueCode(StrEnum):
    DUPLICATE_NODE_ID = "DUPLICATE_NODE_ID"
    DUPLICATE_AGENT_ID = "DUPLICATE_AGENT_ID"
    UNKNOWN_NODE = "UNKNOWN_NODE"
    SELF_LOOP = "SELF_LOOP"
    CYCLE = "CYCLE"
    ISOLATED_NODE = "ISOLATED_NODE"
    DUPLICATE_EDGE = "DUPLICATE_EDGE"  # warning
    PROVIDER_NOT_FOUND = "PROVIDER_NOT_FOUND"
    PROVIDER_INACTIVE = "PROVIDER_INACTIVE"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    MODEL_DEPRECATED = "MODEL_DEPRECATED"
    MODEL_MAINTENANCE = "MODEL_MAINTENANCE"  # warning
    MODEL_TYPE_UNSUPPORTED = "MODEL_TYPE_UNSUPPORTED"
    TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
    APPROVAL_TOOL_NOT_LISTED = "APPROVAL_TOOL_NOT_LISTED"
    DUPLICATE_TOOL = "DUPLICATE_TOOL"  # warning
    CAPABILITY_MISSING = "CAPABILITY_MISSING"  # error, or warning for non-adaptive supervisors
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"


class Issue(BaseModel):
    """One problem: what (``code``), why (``message``) and where in the request body (``path``)."""

    code: str
    message: str
    path: str


# --------------------------------------------------------------------------------------------- the report


@dataclass
class ValidationReport:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    invalid_nodes: list[str] = field(default_factory=list)
    # One entry per distinct missing provider, model, tool or node, with every path that names it.
    missing_references: list[dict[str, Any]] = field(default_factory=list)
    # (provider id, model row id) of every model the team uses that resolved (used to track references).
    model_references: set[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=set)

    @property
    def valid(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------------------------- the rules


def _node_path(index: int) -> str:
    return f"topology.nodes[{index}]"


def _agent_path(node_index: int, agent_index: int) -> str:
    return f"topology.nodes[{node_index}].agents[{agent_index}]"


def _edge_path(index: int) -> str:
    return f"topology.edges[{index}]"


class _Validator:
    def __init__(self, spec: TeamSpec, catalog: ModelCatalog, tool_names: set[str]) -> None:
        self.spec = spec
        self.catalog = catalog
        self.tool_names = tool_names
        self.report = ValidationReport()
        self._invalid_nodes: set[str] = set()
        self._missing: dict[tuple[str, ...], dict[str, Any]] = {}
        self._lookups: dict[tuple[str, str], ModelLookup] = {}

    # ----------------------------------------------------------------------------------------- recording

    def error(self, code: IssueCode, message: str, path: str, *, node_id: str | None = None) -> None:
        self.report.errors.append(Issue(code=code.value, message=message, path=path))
        if node_id is not None:
            self._invalid_nodes.add(node_id)

    def warning(self, code: IssueCode, message: str, path: str) -> None:
        self.report.warnings.append(Issue(code=code.value, message=message, path=path))

    def missing(self, path: str, **reference: str) -> None:
        key = tuple(f"{k}={v}" for k, v in reference.items())
        entry = self._missing.get(key)
        if entry is None:
            entry = self._missing[key] = {**reference, "paths": []}
        entry["paths"].append(path)

    # ----------------------------------------------------------------------------------------- checks

    def run(self) -> ValidationReport:
        spec = self.spec
        if not MIN_TIMEOUT_SECONDS <= spec.timeout_seconds <= MAX_TIMEOUT_SECONDS:
            self.error(
                IssueCode.LIMIT_EXCEEDED,
                f"timeout_seconds must be between {MIN_TIMEOUT_SECONDS} and {MAX_TIMEOUT_SECONDS}, "
                f"got {spec.timeout_seconds}",
                "timeout_seconds",
            )
        node_ids = self.check_nodes()
        self.check_edges(node_ids)
        self.check_supervisor(spec.topology.global_supervisor, "topology.global_supervisor", None)
        in_order = (n.node_id for n in spec.topology.nodes if n.node_id in self._invalid_nodes)
        self.report.invalid_nodes = list(dict.fromkeys(in_order))
        self.report.missing_references = list(self._missing.values())
        return self.report

    def check_nodes(self) -> set[str]:
        nodes = self.spec.topology.nodes
        if len(nodes) > MAX_NODES:
            self.error(
                IssueCode.LIMIT_EXCEEDED,
                f"a team may have at most {MAX_NODES} nodes, got {len(nodes)}",
                "topology.nodes",
            )
        seen: dict[str, int] = {}
        for index, node in enumerate(nodes):
            path = _node_path(index)
            first = seen.setdefault(node.node_id, index)
            if first != index:
                self.error(
                    IssueCode.DUPLICATE_NODE_ID,
                    f"node id {node.node_id!r} is already used by topology.nodes[{first}]",
                    f"{path}.node_id",
                    node_id=node.node_id,
                )
            if len(node.agents) > MAX_AGENTS_PER_NODE:
                self.error(
                    IssueCode.LIMIT_EXCEEDED,
                    f"node {node.node_id!r} has {len(node.agents)} agents; at most {MAX_AGENTS_PER_NODE} are allowed",
                    f"{path}.agents",
                    node_id=node.node_id,
                )
            agent_ids: dict[str, int] = {}
            for agent_index, agent in enumerate(node.agents):
                agent_path = _agent_path(index, agent_index)
                first_agent = agent_ids.setdefault(agent.agent_id, agent_index)
                if first_agent != agent_index:
                    self.error(
                        IssueCode.DUPLICATE_AGENT_ID,
                        f"agent id {agent.agent_id!r} is already used in node {node.node_id!r} "
                        f"by {path}.agents[{first_agent}]",
                        f"{agent_path}.agent_id",
                        node_id=node.node_id,
                    )
                model = self.check_model_ref(agent, agent_path, node.node_id)
                self.check_tools(agent.tools, agent_path, node.node_id)
                for tool_index, tool in enumerate(agent.approval_required_tools):
                    if tool not in agent.tools:
                        self.error(
                            IssueCode.APPROVAL_TOOL_NOT_LISTED,
                            f"approval_required_tools names {tool!r}, which is not among the agent's tools",
                            f"{agent_path}.approval_required_tools[{tool_index}]",
                            node_id=node.node_id,
                        )
                if agent.tools and model is not None and not model.supports(Capability.function_calling):
                    self.error(
                        IssueCode.CAPABILITY_MISSING,
                        f"agent {agent.agent_id!r} uses tools but model {agent.model_id!r} does not support "
                        "function_calling",
                        f"{agent_path}.model_id",
                        node_id=node.node_id,
                    )
            self.check_supervisor(node.supervisor_config, f"{path}.supervisor_config", node.node_id)
        return set(seen)

    def check_tools(self, tools: list[str], agent_path: str, node_id: str) -> None:
        listed: set[str] = set()
        for tool_index, tool in enumerate(tools):
            path = f"{agent_path}.tools[{tool_index}]"
            if tool in listed:
                self.warning(IssueCode.DUPLICATE_TOOL, f"tool {tool!r} is listed more than once", path)
                continue
            listed.add(tool)
            if tool not in self.tool_names:
                self.error(IssueCode.TOOL_NOT_FOUND, f"tool {tool!r} is not registered", path, node_id=node_id)
                self.missing(path, type="tool", tool=tool)

    def check_supervisor(self, supervisor: ModelRef, path: str, node_id: str | None) -> None:
        model = self.check_model_ref(supervisor, path, node_id)
        if model is None or model.supports(Capability.structured_output) or model.supports(Capability.function_calling):
            return
        strategy = getattr(supervisor, "coordination_strategy", None)
        message = f"supervisor model {supervisor.model_id!r} supports neither structured_output nor function_calling"
        if strategy in (NodeStrategy.adaptive, GlobalStrategy.adaptive):
            self.error(
                IssueCode.CAPABILITY_MISSING,
                f"{message}; the adaptive strategy needs one of them to pick what runs next",
                f"{path}.model_id",
                node_id=node_id,
            )
        else:
            self.warning(
                IssueCode.CAPABILITY_MISSING,
                f"{message}; its messages and summaries cannot be structured",
                f"{path}.model_id",
            )

    def check_model_ref(self, ref: ModelRef, path: str, node_id: str | None) -> ModelEntry | None:
        """The model a reference names when it is usable (deprecated or inactive ones are reported and dropped)."""
        key = (ref.model_provider, ref.model_id)
        found = self._lookups.get(key)
        if found is None:
            found = self._lookups[key] = self.catalog.lookup(*key)
        provider, model = found.provider, found.model
        if provider is None or provider.deleted:
            reason = "was deleted" if provider is not None else "does not exist"
            self.error(
                IssueCode.PROVIDER_NOT_FOUND,
                f"provider {ref.model_provider!r} {reason}",
                f"{path}.model_provider",
                node_id=node_id,
            )
            self.missing(f"{path}.model_provider", type="provider", model_provider=ref.model_provider)
            return None
        if model is None:
            self.error(
                IssueCode.MODEL_NOT_FOUND,
                f"provider {provider.name!r} has no model {ref.model_id!r}",
                f"{path}.model_id",
                node_id=node_id,
            )
            self.missing(f"{path}.model_id", type="model", model_provider=ref.model_provider, model_id=ref.model_id)
            return None
        self.report.model_references.add((provider.id, model.id))
        usable = True
        if not provider.is_active:
            self.error(
                IssueCode.PROVIDER_INACTIVE,
                f"provider {provider.name!r} is inactive",
                f"{path}.model_provider",
                node_id=node_id,
            )
            usable = False
        if model.status == ModelStatus.deprecated:
            self.error(
                IssueCode.MODEL_DEPRECATED,
                f"model {ref.model_id!r} of provider {provider.name!r} is deprecated",
                f"{path}.model_id",
                node_id=node_id,
            )
            usable = False
        elif model.status == ModelStatus.maintenance:
            self.warning(
                IssueCode.MODEL_MAINTENANCE,
                f"model {ref.model_id!r} of provider {provider.name!r} is in maintenance",
                f"{path}.model_id",
            )
        if model.type == ModelType.embedding:
            self.error(
                IssueCode.MODEL_TYPE_UNSUPPORTED,
                f"model {ref.model_id!r} is an embedding model and cannot chat",
                f"{path}.model_id",
                node_id=node_id,
            )
            usable = False
        return model if usable else None

    def check_edges(self, node_ids: set[str]) -> None:
        topology = self.spec.topology
        touched: set[str] = set()
        seen: dict[tuple[str, str, str], int] = {}
        first_ordering_edge: dict[tuple[str, str], int] = {}
        for index, edge in enumerate(topology.edges):
            path = _edge_path(index)
            source, target = edge.source_node_id, edge.target_node_id
            touched.update((source, target))
            known = True
            for end, node_id in (("source_node_id", source), ("target_node_id", target)):
                if node_id not in node_ids:
                    known = False
                    self.error(IssueCode.UNKNOWN_NODE, f"edge names an unknown node {node_id!r}", f"{path}.{end}")
                    self.missing(f"{path}.{end}", type="node", node_id=node_id)
            if source == target:
                self.error(IssueCode.SELF_LOOP, f"edge connects node {source!r} to itself", path, node_id=source)
                continue
            first = seen.setdefault((source, target, edge.relation_type.value), index)
            if first != index:
                self.warning(
                    IssueCode.DUPLICATE_EDGE,
                    f"edge repeats topology.edges[{first}] ({source} -{edge.relation_type.value}-> {target})",
                    path,
                )
            ordering = edge.ordering
            if known and ordering is not None:
                first_ordering_edge.setdefault(ordering, index)

        if len(node_ids) > 1 and not topology.allow_isolated_nodes:
            reported: set[str] = set()
            for index, node in enumerate(topology.nodes):
                if node.node_id not in touched and node.node_id not in reported:
                    reported.add(node.node_id)
                    self.error(
                        IssueCode.ISOLATED_NODE,
                        f"node {node.node_id!r} is connected to no other node (set allow_isolated_nodes to allow it)",
                        _node_path(index),
                        node_id=node.node_id,
                    )

        graph = OrderingGraph.build([n.node_id for n in topology.nodes], first_ordering_edge.keys())
        cycle = graph.find_cycle()
        if cycle is not None:
            closing = first_ordering_edge[(cycle[-2], cycle[-1])]
            self.error(
                IssueCode.CYCLE,
                f"the ordering edges form a cycle (each node must finish before the next): {' -> '.join(cycle)}",
                _edge_path(closing),
            )
            self._invalid_nodes.update(cycle)
            return
        depth = graph.depth()
        if depth > MAX_DEPTH:
            self.error(
                IssueCode.LIMIT_EXCEEDED,
                f"the longest ordering path has {depth} nodes; at most {MAX_DEPTH} are allowed",
                "topology.edges",
            )


def validate_team(spec: TeamSpec, catalog: ModelCatalog, tool_names: set[str]) -> ValidationReport:
    """Every problem of ``spec`` against the configuration snapshot and the registered tools, at once."""
    return _Validator(spec, catalog, tool_names).run()


def topology_depth(spec: TeamSpec) -> int:
    """Nodes on the longest ordering path of a valid team's topology (for its summary)."""
    return OrderingGraph.from_topology(spec.topology).depth()
