"""GET /api/v1/tools: the registered tools with their JSON-schema arguments, paginated, for any role."""

from __future__ import annotations

import httpx
import pytest

from aiops_executor.tools.builtin import default_registry
from tests.conftest import RoleHeaders
from tests.helpers import API, assert_error


@pytest.fixture
def backend() -> str:
    # The built-in tools need no table; tests/tool_servers/test_tool_servers.py lists servers' tools on both
    # backends.
    return "sqlite"


async def test_viewer_lists_every_tool_with_its_schema(client: httpx.AsyncClient, role_headers: RoleHeaders) -> None:
    response = await client.get(f"{API}/tools", params={"size": 100}, headers=await role_headers("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    registry = default_registry()
    assert (body["total"], body["page"], body["size"], body["pages"]) == (len(registry.names()), 1, 100, 1)
    assert [item["name"] for item in body["items"]] == sorted(registry.names())
    by_name = {item["name"]: item for item in body["items"]}
    http_check = by_name["http_check"]
    assert set(http_check) == {
        "name",
        "description",
        "args_schema",
        "timeout_seconds",
        "attribute_keys",
        "thresholds",
        "server",
        "approval_required",
    }
    assert http_check["thresholds"] == {"latency_degraded_ms": 1000.0, "latency_failed_ms": 5000.0}
    # A threshold only the node can set is listed unset (JSON has no infinity).
    assert by_name["prometheus_query"]["thresholds"] == {"value_degraded_at": None, "value_failed_at": None}
    assert http_check["server"] is None and http_check["approval_required"] is False
    assert http_check["args_schema"] == registry.get("http_check").json_schema()  # type: ignore[union-attr]
    assert http_check["args_schema"]["properties"]["url"]["description"]
    assert http_check["attribute_keys"] == ["url", "expected_status"]
    assert by_name["postgres_diagnostics"]["attribute_keys"] == ["postgres_dsn"]
    assert all(item["timeout_seconds"] > 0 for item in body["items"])


async def test_tools_are_paginated(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    total = len(default_registry().names())
    response = await client.get(f"{API}/tools", params={"page": 3, "size": 3}, headers=admin_headers)
    body = response.json()
    assert (body["total"], body["pages"], body["page"], body["size"]) == (total, -(-total // 3), 3, 3)
    assert [item["name"] for item in body["items"]] == sorted(default_registry().names())[6:9]
    beyond = (await client.get(f"{API}/tools", params={"page": 9}, headers=admin_headers)).json()
    assert beyond["items"] == [] and beyond["total"] == total
    assert_error(await client.get(f"{API}/tools", params={"size": 0}, headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_tools_need_a_token(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"{API}/tools"), 401, "UNAUTHORIZED")
