from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditLogRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    actor: str
    action: str
    resource_type: str
    resource_id: str | None
    request_id: str | None
    details: dict[str, Any]
    created_at: datetime
    updated_at: datetime
