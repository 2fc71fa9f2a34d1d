"""Request and response bodies of the teams API. The create body is ``engine.topology.TeamSpec``."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aiops_executor.core.json_types import JSON_INT, JsonInt
from aiops_executor.core.partial import PartialUpdate
from aiops_executor.engine.topology import Description, ShortName, Topology
from aiops_executor.teams.validation import Issue


class TeamStatus(StrEnum):
    active = "active"  # runs
    inactive = "inactive"  # switched off by a user
    error = "error"  # its last validation failed against the LLM configuration or the tool registry


class TopologySummary(BaseModel):
    node_count: int
    agent_count: int
    edge_count: int
    depth: int


class TeamCreated(BaseModel):
    team_id: uuid.UUID
    status: Literal["created"] = "created"
    created_at: datetime
    topology_summary: TopologySummary


class TeamSummary(BaseModel):
    """A team in a list: everything but the topology."""

    team_id: uuid.UUID
    team_name: str
    description: str
    status: TeamStatus
    timeout_seconds: int
    max_iterations: int
    topology_summary: TopologySummary
    created_at: datetime
    updated_at: datetime


class TeamRead(TeamSummary):
    topology: Topology


class TeamUpdate(PartialUpdate):
    """Partial update: omitted fields keep their value. A change to the definition (anything but ``status``)
    is re-validated as a whole against today's LLM configuration, and so is setting ``status`` to ``active``.
    ``error`` is set by validation only."""

    model_config = ConfigDict(extra="forbid")

    team_name: ShortName | None = None
    description: Description | None = None
    timeout_seconds: JsonInt | None = None
    max_iterations: Annotated[int, Field(ge=1, le=1000), JSON_INT] | None = None
    topology: Topology | None = None
    status: Literal[TeamStatus.active, TeamStatus.inactive] | None = None


class TeamValidation(BaseModel):
    """``POST /teams/{id}/validate``: the contract's ``valid``/``errors``/``warnings``, plus what the 400
    ``INVALID_TOPOLOGY`` details carry and the team's status after the check."""

    valid: bool
    errors: list[Issue]
    warnings: list[Issue]
    invalid_nodes: list[str]
    missing_references: list[dict[str, Any]]
    status: TeamStatus
