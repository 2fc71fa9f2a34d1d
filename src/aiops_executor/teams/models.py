from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from aiops_executor.core.db import Base, TimestampedRow


class Team(TimestampedRow, Base):
    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    status: Mapped[str] = mapped_column(String(16), default="active", nullable=False, index=True)
    timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False)
    max_iterations: Mapped[int] = mapped_column(Integer, nullable=False)
    # The validated ``Topology`` as the client sent it (``TeamSpec.topology`` dumped to JSON).
    topology: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    node_count: Mapped[int] = mapped_column(Integer, nullable=False)
    agent_count: Mapped[int] = mapped_column(Integer, nullable=False)
    edge_count: Mapped[int] = mapped_column(Integer, nullable=False)
    depth: Mapped[int] = mapped_column(Integer, nullable=False)


class TeamModelReference(TimestampedRow, Base):
    """One configured model a team uses (agents and supervisors), so that deleting a provider or a model a
    team still needs is refused with one indexed lookup. Rewritten whenever the team is saved or validated."""

    __tablename__ = "team_model_references"
    __table_args__ = (UniqueConstraint("team_id", "model_row_id"),)

    # No separate index on team_id: the unique constraint leads with it.
    team_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("teams.id", ondelete="CASCADE"), nullable=False)
    provider_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    model_row_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("llm_models.id", ondelete="CASCADE"), nullable=False, index=True
    )
