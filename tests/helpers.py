"""Small helpers shared by the API tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from aiops_executor.core.context import AppContext

API = "/api/v1"
# The checkout: examples, deploy files, the console's sources.
REPO_ROOT = Path(__file__).resolve().parents[1]
ERROR_KEYS = {"error_code", "error_message", "details", "request_id"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error body with this status and code."""
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert set(body) == ERROR_KEYS, body
    assert body["error_code"] == code, body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def created(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """POST under /api/v1 that must answer 201; returns the created resource."""
    response = await client.post(f"{API}{path}", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def make_provider(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "p", provider_type: str = "openai"
) -> str:
    """Creates a provider and returns its id."""
    return str((await created(client, headers, "/providers", {"name": name, "type": provider_type}))["id"])


CAPABLE = {"supported": True, "score": 3}


async def add_simulator(
    client: httpx.AsyncClient,
    headers: dict[str, str] | None = None,
    *,
    latency_ms: float | None = None,
    name: str = "local-sim",
    models: Mapping[str, float | None] | None = None,
    priced: bool = False,
) -> dict[str, Any]:
    """Registers the offline provider ``name`` (``local-sim``) with its models (chat, tools, structured output):
    ``models`` maps each model id to its latency per call; by default one model, ``sim-1``, at ``latency_ms``.
    ``priced``: $0.5 / $1.5 per 1K tokens, so runs have a cost. Returns the provider."""
    headers = headers or {}
    provider = await created(client, headers, "/providers", {"name": name, "type": "simulator"})
    for model_id, latency in (models or {"sim-1": latency_ms}).items():
        model: dict[str, Any] = {
            "model_id": model_id,
            "name": model_id,
            "capabilities": {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE},
        }
        if latency is not None:
            model["default_params"] = {"latency_ms": latency}
        if priced:
            model.update(input_price="0.5", output_price="1.5")
        await created(client, headers, f"/providers/{provider['id']}/models", model)
    return provider


async def damage_credential(context: AppContext, damaged_id: str, donor_id: str) -> None:
    """Gives credential ``damaged_id`` the API-key ciphertext of ``donor_id``: it no longer decrypts (each
    ciphertext is bound to its row), as after a restore from another installation."""
    from sqlalchemy import select, update

    from aiops_executor.llm.models import ProviderCredential

    async with context.database.sessionmaker() as session:
        foreign = await session.scalar(
            select(ProviderCredential.api_key_encrypted).where(ProviderCredential.id == uuid.UUID(donor_id))
        )
        await session.execute(
            update(ProviderCredential)
            .where(ProviderCredential.id == uuid.UUID(damaged_id))
            .values(api_key_encrypted=foreign)
        )
        await session.commit()
