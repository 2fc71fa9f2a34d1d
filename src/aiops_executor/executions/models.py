"""Executions and their persisted event log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from aiops_executor.core.db import Base, TimestampedRow, UTCDateTime, utcnow
from aiops_executor.teams.models import Team

# Kept in step with ``schemas.UNFINISHED`` (the migration that creates the index spells the same condition).
UNFINISHED_CONDITION = "status IN ('pending', 'running', 'awaiting_approval') AND trigger_key IS NOT NULL"


class Execution(TimestampedRow, Base):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_team_id_created_at", "team_id", "created_at"),
        Index("ix_executions_status", "status"),
        Index("ix_executions_completed_at", "completed_at"),
        # One unfinished run per trigger (an Alertmanager alert group): the database itself refuses a second
        # one, so two webhook deliveries racing each other cannot both start a run.
        Index(
            "uq_executions_trigger_key_unfinished",
            "trigger_key",
            unique=True,
            postgresql_where=text(UNFINISHED_CONDITION),
            sqlite_where=text(UNFINISHED_CONDITION),
        ),
    )

    team_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey(Team.id, ondelete="CASCADE"), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="pending")
    input: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False)
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The team definition as it was when the run was requested: later edits do not change a run.
    team_snapshot: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    requested_by: Mapped[str] = mapped_column(String(200), nullable=False)
    # The API key that started the run (its budgets apply); None when a signed-in user did.
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    structured_output: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # 1, plus one per resume after the process running it was lost; the process (host:pid) running it now.
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    worker_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # What started the run when it was not a person, as a fixed-size digest (``executions.service.trigger_key``):
    # e.g. an Alertmanager group key, which can be kilobytes of labels, too long for an index entry.
    trigger_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Waiting for approvals: since when (while ``awaiting_approval``), and how long all waits took so far --
    # time that does not count toward ``timeout_seconds``.
    awaiting_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    waited_seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")


class ExecutionApproval(TimestampedRow, Base):
    """A tool call that waits for a person's decision. Its id is derived from the run and the LangGraph
    interrupt that asked (``engine.approval_id``), so asking again for the same call finds the same row."""

    __tablename__ = "execution_approvals"
    __table_args__ = (Index("ix_execution_approvals_execution_id", "execution_id"),)

    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"), nullable=False
    )
    interrupt_id: Mapped[str] = mapped_column(String(64), nullable=False)
    tool: Mapped[str] = mapped_column(String(200), nullable=False)
    input: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")  # pending|approved|rejected
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    # Set when the decision was handed to the run (it resumed with it): never handed over twice.
    delivered: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class ExecutionEventRow(Base):
    """One event of a run; ``(execution_id, seq)`` is its identity and the order clients replay in."""

    __tablename__ = "execution_events"

    execution_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    supervisor_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)
