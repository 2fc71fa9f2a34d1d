"""Immutable snapshots of the configuration a model call needs.

They carry ciphertexts, never plaintext: secrets are decrypted only when a client is built, in memory.
An execution can hold a snapshot for its whole run, unaffected by later configuration edits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class EndpointConfig:
    id: uuid.UUID
    name: str
    base_url: str | None
    api_version: str | None
    region: str | None
    timeout_connect: float
    timeout_read: float
    retry_count: int
    retry_interval: float
    priority: int
    is_default: bool = False
    health_status: str = "unknown"
    # The provider's limits for this endpoint, per minute (``limits``); None: none.
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True)
class CredentialConfig:
    id: uuid.UUID
    provider_id: uuid.UUID
    alias: str
    api_key_encrypted: str
    secret_key_encrypted: str | None
    access_token_encrypted: str | None
    expires_at: datetime | None
    quota_limit: int | None
    quota_used: int


@dataclass(frozen=True)
class ModelConfig:
    id: uuid.UUID
    provider_id: uuid.UUID
    provider_name: str
    provider_type: str
    model_id: str
    name: str
    status: str
    input_price: Decimal | None
    output_price: Decimal | None
    default_params: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    max_output_tokens: int | None = None

    def supports(self, capability: str) -> bool:
        entry = self.capabilities.get(capability)
        return isinstance(entry, dict) and bool(entry.get("supported"))


@dataclass(frozen=True)
class ModelBinding:
    """A model with every endpoint and credential its provider may serve it through."""

    model: ModelConfig
    endpoints: tuple[EndpointConfig, ...]
    credentials: tuple[CredentialConfig, ...]


@dataclass(frozen=True)
class DecryptedSecrets:
    """Plaintext key material, alive only while a client is being built. Never logged or serialised."""

    api_key: str
    secret_key: str | None = None
    access_token: str | None = None

    def __repr__(self) -> str:
        return "DecryptedSecrets(<redacted>)"

    __str__ = __repr__


def merged_params(model: ModelConfig, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The model's default parameters with a caller's overrides (None values leave a default in place)."""
    params = dict(model.default_params)
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "max_tokens" not in params and model.max_output_tokens:
        params["max_tokens"] = model.max_output_tokens
    return params
