from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from aiops_executor.core.db import Base, TimestampedRow, UTCDateTime


class ToolServer(TimestampedRow, Base):
    """An MCP server agents may use tools of. ``env`` and ``headers`` are secrets: each is stored as one
    encrypted JSON object bound to its row and column, next to its masked form for responses."""

    __tablename__ = "tool_servers"
    __table_args__ = (UniqueConstraint("name"),)

    name: Mapped[str] = mapped_column(String(64), nullable=False)
    transport: Mapped[str] = mapped_column(String(32), nullable=False)
    command: Mapped[str | None] = mapped_column(Text, nullable=True)
    args: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    env_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    headers_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    # {"env": {name: masked}, "headers": {name: masked}}: what responses show of the secrets.
    secret_masks: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON, default=dict, nullable=False)
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # The tools the server listed at its last successful refresh: [{"name", "description", "input_schema"}].
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    tools_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
