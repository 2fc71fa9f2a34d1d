"""A route: one endpoint of a provider used with one of its credentials, and the keys its cool-downs go by."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiops_executor.llm.runtime.config import CredentialConfig, EndpointConfig, ModelBinding
from aiops_executor.llm.runtime.errors import Failure


@dataclass(frozen=True)
class Route:
    endpoint: EndpointConfig | None
    credential: CredentialConfig | None

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.name if self.endpoint else None,
            "credential_alias": self.credential.alias if self.credential else None,
        }

    def where(self) -> str:
        """The route in a user's words: ``endpoint 'primary' with key 'main'``."""
        where = f"endpoint {self.endpoint.name!r}" if self.endpoint else "the provider"
        return f"{where} with key {self.credential.alias!r}" if self.credential else where

    def attempt(self, failure: Failure) -> dict[str, Any]:
        """A failed attempt on this route, as error details list it."""
        return {
            **self.describe(),
            "error_code": failure.error_code,
            "error_message": failure.message,
            "status": failure.status,
        }


def route_key(endpoint_id: uuid.UUID, credential_id: uuid.UUID) -> uuid.UUID:
    """One endpoint used with one key: what a 429 throttles (the same key may be free elsewhere, another key here)."""
    return uuid.uuid5(endpoint_id, str(credential_id))


def cooldown_keys(route: Route) -> list[tuple[str, uuid.UUID]]:
    keys: list[tuple[str, uuid.UUID]] = []
    if route.endpoint:
        keys.append(("endpoint", route.endpoint.id))
    if route.credential:
        keys.append(("credential", route.credential.id))
    if route.endpoint and route.credential:
        keys.append(("route", route_key(route.endpoint.id, route.credential.id)))
    return keys


def plan_candidates(binding: ModelBinding) -> list[Route]:
    """Every endpoint with every credential, unordered and unfiltered (for reading their cool-downs)."""
    options: list[CredentialConfig | None] = list(binding.credentials) or [None]
    return [Route(endpoint, credential) for endpoint in binding.endpoints for credential in options]
