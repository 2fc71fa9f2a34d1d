"""API shapes of the tool catalogue."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aiops_executor.tools.registry import ToolSpec


class ToolRead(BaseModel):
    name: str
    description: str
    args_schema: dict[str, Any] = Field(description="JSON schema of the tool's arguments")
    timeout_seconds: float
    attribute_keys: list[str] = Field(
        default_factory=list, description="node attributes the tool reads when an argument is omitted"
    )

    @classmethod
    def from_spec(cls, spec: ToolSpec) -> ToolRead:
        return cls(
            name=spec.name,
            description=spec.description,
            args_schema=spec.json_schema(),
            timeout_seconds=spec.timeout_seconds,
            attribute_keys=list(spec.attribute_keys),
        )
