"""The resource topology a team is built from: the body of ``POST /teams`` (contract section Teams).

These models check only the shape of each field. Rules that look across the whole topology (unique ids,
edges, cycles, depth, references to the LLM configuration and the tool registry) live in
``teams.validation`` so that every problem is reported at once, with its path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StringConstraints

from aiops_executor.core.json_types import JSON_INT, JsonInt
from aiops_executor.core.text import FREE_TEXT, NAME_TEXT, SafeJson

ClientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), NAME_TEXT]
Prompt = Annotated[str, StringConstraints(max_length=20_000), FREE_TEXT]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=100), NAME_TEXT]
Description = Annotated[str, StringConstraints(max_length=2000), FREE_TEXT]

MAX_NODES = 100
MAX_AGENTS_PER_NODE = 20
MAX_DEPTH = 10
MAX_TIMEOUT_SECONDS = 1800
# Hard caps, ten times the limits above: up to them a body is parsed and every problem is reported at once
# (400 INVALID_TOPOLOGY, with the limit as one of the problems); beyond them it is refused while parsing
# (422 VALIDATION_ERROR), before any work proportional to an absurd size is done.
HARD_MAX_NODES = 10 * MAX_NODES
HARD_MAX_AGENTS_PER_NODE = 10 * MAX_AGENTS_PER_NODE
HARD_MAX_EDGES = 10_000


class RelationType(StrEnum):
    calls = "calls"
    depends_on = "depends_on"
    integrates = "integrates"
    monitors = "monitors"
    data_flow = "data_flow"


class NodeStrategy(StrEnum):
    round_robin = "round_robin"
    priority = "priority"
    adaptive = "adaptive"


class GlobalStrategy(StrEnum):
    parallel = "parallel"
    sequential = "sequential"
    hierarchical = "hierarchical"
    adaptive = "adaptive"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Strict):
    """Which configured model a supervisor or agent runs on."""

    model_provider: ShortName
    model_id: ShortName


class AgentSpec(ModelRef):
    agent_id: ClientId
    agent_name: Name
    system_prompt: Prompt = ""
    user_prompt_template: Prompt = "{task}"
    tools: list[ShortName] = Field(default_factory=list, max_length=50)
    # Tools (among ``tools``) whose every call by this agent waits for a person's approval.
    approval_required_tools: list[ShortName] = Field(default_factory=list, max_length=50)
    temperature: StrictFloat | None = Field(default=None, ge=0, le=2)
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), JSON_INT] | None = None


class NodeSupervisorSpec(ModelRef):
    system_prompt: Prompt = ""
    coordination_strategy: NodeStrategy = NodeStrategy.round_robin


class GlobalSupervisorSpec(ModelRef):
    system_prompt: Prompt = ""
    coordination_strategy: GlobalStrategy = GlobalStrategy.hierarchical


class NodeSpec(_Strict):
    node_id: ClientId
    node_name: Name
    node_type: ShortName
    attributes: SafeJson = Field(default_factory=dict)
    # The count limit is a topology rule (reported with the others); only an absurd count is refused here.
    agents: list[AgentSpec] = Field(min_length=1, max_length=HARD_MAX_AGENTS_PER_NODE)
    supervisor_config: NodeSupervisorSpec


class EdgeSpec(_Strict):
    source_node_id: ClientId
    target_node_id: ClientId
    relation_type: RelationType
    attributes: SafeJson = Field(default_factory=dict)

    @property
    def ordering(self) -> tuple[str, str] | None:
        """(runs first, runs after) for edges that impose an order, else None (contract: dependency order)."""
        if self.relation_type in (RelationType.calls, RelationType.depends_on):
            return (self.target_node_id, self.source_node_id)
        if self.relation_type is RelationType.data_flow:
            return (self.source_node_id, self.target_node_id)
        return None


class Topology(_Strict):
    nodes: list[NodeSpec] = Field(min_length=1, max_length=HARD_MAX_NODES)
    edges: list[EdgeSpec] = Field(default_factory=list, max_length=HARD_MAX_EDGES)
    global_supervisor: GlobalSupervisorSpec
    allow_isolated_nodes: StrictBool = False

    def node(self, node_id: str) -> NodeSpec:
        return next(n for n in self.nodes if n.node_id == node_id)


class TeamSpec(_Strict):
    """A team definition: what ``POST /teams`` takes and what ``aiops-executor run`` reads from a file."""

    team_name: ShortName
    description: Description = ""
    # Range rules are topology rules (reported with the others); only the type is checked here.
    timeout_seconds: JsonInt = 300
    max_iterations: JsonInt = Field(default=50, ge=1, le=1000)
    topology: Topology
