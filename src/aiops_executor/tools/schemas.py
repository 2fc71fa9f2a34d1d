"""API shapes of the tool catalogue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aiops_executor.tools.registry import ToolSpec


class ToolRead(BaseModel):
    name: str = Field(description="built-in tools by name; tools of MCP servers as <server_name>.<tool_name>")
    description: str
    args_schema: dict[str, Any] = Field(description="JSON schema of the tool's arguments")
    timeout_seconds: float
    attribute_keys: list[str] = Field(
        default_factory=list, description="node attributes the tool reads when an argument is omitted"
    )
    thresholds: dict[str, float | None] = Field(
        default_factory=dict,
        description="the verdict's default thresholds, settable per node in its attribute thresholds.<tool>.<name> "
        "(null: unset, the node must set it for the value to be judged)",
    )
    server: str | None = Field(default=None, description="the MCP tool server lending the tool; null when built in")
    approval_required: bool = Field(
        default=False, description="every call needs a person's approval (its server requires it)"
    )

    @classmethod
    def from_spec(cls, spec: ToolSpec) -> ToolRead:
        return cls(
            name=spec.name,
            description=spec.description,
            args_schema=spec.json_schema(),
            timeout_seconds=spec.timeout_seconds,
            attribute_keys=list(spec.attribute_keys),
            # JSON has no infinity: an unset threshold is null.
            thresholds={name: None if value == float("inf") else value for name, value in spec.thresholds.items()},
            server=spec.server,
            approval_required=spec.approval_required,
        )
