"""Who is calling: a signed-in user or an API key, with its role. Apart from ``dependencies`` (which finds it for
a request) so that services and the command line use it without loading the web framework."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiops_executor.auth.models import Role


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" or "api_key"
    id: uuid.UUID
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def api_key_id(self) -> uuid.UUID | None:
        """The API key calling, if one is (its budgets apply to the runs it starts)."""
        return self.id if self.kind == "api_key" else None
