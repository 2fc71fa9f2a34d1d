from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from aiops_executor.auth.models import Role
from aiops_executor.core.partial import PartialUpdate
from aiops_executor.core.text import NameText

USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,100}$"


class TokenRequest(BaseModel):
    """The OAuth2 password form of ``POST /auth/token`` (``application/x-www-form-urlencoded``).

    Empty fields are documented as invalid: an empty form field reaches the service as a missing one.
    """

    grant_type: Literal["password"] = "password"
    username: NameText = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024, json_schema_extra={"format": "password"})


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=8, max_length=256)
    role: Role


class UserUpdate(PartialUpdate):
    """A user's role, or whether they may sign in (a disabled user's tokens stop working at once)."""

    role: Role | None = None
    is_active: StrictBool | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ApiKeyCreate(BaseModel):
    name: NameText = Field(min_length=1, max_length=100)
    role: Role


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: Role
    key_prefix: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    key: str = Field(description="The key itself. Shown only in this response; only a hash is stored.")
    created_at: datetime
