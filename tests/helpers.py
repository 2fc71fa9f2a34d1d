"""Small helpers shared by the API tests."""

from __future__ import annotations

from typing import Any

import httpx

API = "/api/v1"
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
