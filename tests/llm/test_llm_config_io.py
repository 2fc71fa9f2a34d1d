"""Configuration export (never secrets) and idempotent, transactional import."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
from sqlalchemy import select

from aiops_executor.audit.models import AuditLog
from aiops_executor.core.context import AppContext
from tests.helpers import API, assert_error

API_KEY = "sk-export-test-0123456789abcdef"


async def post(client: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"{API}{path}", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def build_config(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    openai = await post(client, headers, "/providers", {"name": "openai", "type": "openai", "description": "main"})
    azure = await post(client, headers, "/providers", {"name": "azure", "type": "azure_openai"})
    sim = await post(client, headers, "/providers", {"name": "sim", "type": "simulator"})
    await post(
        client,
        headers,
        f"/providers/{openai['id']}/endpoints",
        {"name": "primary", "base_url": "https://api.openai.com/v1", "is_default": True, "priority": 1},
    )
    await post(client, headers, f"/providers/{openai['id']}/endpoints", {"name": "backup", "priority": 2})
    await post(
        client,
        headers,
        f"/providers/{azure['id']}/endpoints",
        {"name": "eu", "base_url": "https://eu.openai.azure.com", "api_version": "2024-06-01"},
    )
    await post(
        client,
        headers,
        f"/providers/{openai['id']}/models",
        {
            "model_id": "gpt-4o",
            "name": "GPT-4o",
            "input_price": 0.0025,
            "output_price": 0.01,
            "capabilities": {"chat": {"supported": True, "score": 5}},
            "default_params": {"temperature": 0.2},
        },
    )
    await post(client, headers, f"/providers/{sim['id']}/models", {"model_id": "simulator", "name": "Simulator"})
    await post(
        client,
        headers,
        f"/providers/{openai['id']}/credentials",
        {"alias": "prod", "api_key": API_KEY, "secret_key": "secret-" + API_KEY},
    )
    return {"openai": openai["id"], "azure": azure["id"], "sim": sim["id"]}


async def export(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"{API}/config/export", headers=headers)
    assert response.status_code == 200, response.text
    assert API_KEY not in response.text
    return dict(response.json())


async def test_export_shape_and_no_secrets(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    await build_config(client, admin_headers)
    doc = await export(client, admin_headers)
    assert doc["version"] == 1
    assert doc["exported_at"].endswith(("Z", "+00:00"))
    assert [p["name"] for p in doc["providers"]] == ["azure", "openai", "sim"]
    openai = doc["providers"][1]
    assert set(openai) == {"name", "type", "description", "is_active", "endpoints", "models"}
    assert (openai["type"], openai["description"], openai["is_active"]) == ("openai", "main", True)
    assert [e["name"] for e in openai["endpoints"]] == ["primary", "backup"]
    assert set(openai["endpoints"][0]) == {
        "name",
        "base_url",
        "api_version",
        "region",
        "timeout_connect",
        "timeout_read",
        "retry_count",
        "retry_interval",
        "priority",
        "is_default",
        "is_active",
        "rpm",
        "tpm",
    }
    assert openai["models"][0]["model_id"] == "gpt-4o"
    assert openai["models"][0]["input_price"] == 0.0025
    assert "id" not in openai["models"][0] and "provider_id" not in openai["models"][0]
    text = json.dumps(doc)
    for forbidden in ("credential", "api_key", "secret", "alias", "prod", "health_status", '"id"'):
        assert forbidden not in text, forbidden


async def test_import_round_trip_is_idempotent(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    await build_config(client, admin_headers)
    doc = await export(client, admin_headers)

    again = await client.post(f"{API}/config/import", json=doc, headers=admin_headers)
    assert again.status_code == 200, again.text
    assert again.json() == {
        "created": {"providers": 0, "endpoints": 0, "models": 0},
        "updated": {"providers": 0, "endpoints": 0, "models": 0},
        "unchanged": {"providers": 3, "endpoints": 3, "models": 2},
    }
    assert (await export(client, admin_headers))["providers"] == doc["providers"]

    changed = copy.deepcopy(doc)
    openai = changed["providers"][1]
    openai["description"] = "changed"
    primary = openai["endpoints"].pop(0)  # absent from the document: kept, but loses the default to "third"
    assert primary["name"] == "primary" and primary["is_default"] is True
    openai["endpoints"][0]["timeout_read"] = 90
    openai["endpoints"].append({"name": "third", "base_url": "https://proxy.example.com/v1", "is_default": True})
    openai["models"][0]["output_price"] = 0.02
    openai["models"].append({"model_id": "o1", "name": "o1", "capabilities": {"chat": {"supported": True, "score": 4}}})
    changed["providers"].append({"name": "claude", "type": "anthropic", "models": [{"model_id": "c", "name": "C"}]})
    first = await client.post(f"{API}/config/import", json=changed, headers=admin_headers)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "created": {"providers": 1, "endpoints": 1, "models": 2},
        # backup's timeout and primary losing the default flag to "third"
        "updated": {"providers": 1, "endpoints": 2, "models": 1},
        "unchanged": {"providers": 2, "endpoints": 1, "models": 1},
    }
    second = await client.post(f"{API}/config/import", json=changed, headers=admin_headers)
    assert second.json()["created"] == {"providers": 0, "endpoints": 0, "models": 0}
    assert second.json()["updated"] == {"providers": 0, "endpoints": 0, "models": 0}
    assert second.json()["unchanged"] == {"providers": 4, "endpoints": 3, "models": 4}

    after = await export(client, admin_headers)
    openai_after = next(p for p in after["providers"] if p["name"] == "openai")
    assert openai_after["description"] == "changed"
    assert {e["name"]: e["is_default"] for e in openai_after["endpoints"]} == {
        "primary": False,
        "backup": False,
        "third": True,
    }
    assert next(m for m in openai_after["models"] if m["model_id"] == "gpt-4o")["output_price"] == 0.02
    # The credential survives imports untouched.
    listing = (await client.get(f"{API}/providers", params={"type": "openai"}, headers=admin_headers)).json()
    pid = listing["items"][0]["id"]
    assert (await client.get(f"{API}/providers/{pid}/credentials", headers=admin_headers)).json()["total"] == 1

    async with context.database.sessionmaker() as session:
        rows = list(
            await session.scalars(select(AuditLog).where(AuditLog.action == "import").order_by(AuditLog.created_at))
        )
        by_import = list(
            await session.scalars(select(AuditLog).where(AuditLog.details["source"].as_string() == "import"))
        )
    assert len(rows) == 3 and all(r.resource_type == "config" for r in rows)
    assert rows[0].details["unchanged"]["providers"] in (3, 4)
    # one record per created/updated resource: 1+1+2 created, 1+2+1 updated
    assert len(by_import) == 8


async def test_import_into_empty_database_creates_everything(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    ids = await build_config(client, admin_headers)
    doc = await export(client, admin_headers)
    for pid in ids.values():
        assert (await client.delete(f"{API}/providers/{pid}", headers=admin_headers)).status_code == 204
    response = await client.post(f"{API}/config/import", json=doc, headers=admin_headers)
    assert response.json()["created"] == {"providers": 3, "endpoints": 3, "models": 2}
    restored = await export(client, admin_headers)
    assert restored["providers"] == doc["providers"]


async def test_import_validates_and_is_all_or_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    good = {"name": "good", "type": "openai", "endpoints": [{"name": "e"}]}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"version": 2, "providers": []}, 422, "VALIDATION_ERROR"),
        ({"version": 1, "providers": [good, {"name": "good", "type": "anthropic"}]}, 422, "VALIDATION_ERROR"),
        (
            {"version": 1, "providers": [good, {"name": "sim", "type": "simulator", "endpoints": [{"name": "e"}]}]},
            422,
            "VALIDATION_ERROR",
        ),
        (
            {"version": 1, "providers": [good, {"name": "az", "type": "azure_openai", "endpoints": [{"name": "e"}]}]},
            422,
            "VALIDATION_ERROR",
        ),
        (
            {
                "version": 1,
                "providers": [
                    {
                        "name": "x",
                        "type": "openai",
                        "endpoints": [{"name": "a", "is_default": True}, {"name": "b", "is_default": True}],
                    }
                ],
            },
            422,
            "VALIDATION_ERROR",
        ),
        (
            {"version": 1, "providers": [{"name": "x", "type": "openai", "endpoints": [{"name": "a"}, {"name": "a"}]}]},
            422,
            "VALIDATION_ERROR",
        ),
        (
            {
                "version": 1,
                "providers": [
                    {
                        "name": "x",
                        "type": "openai",
                        "models": [{"model_id": "m", "name": "m"}, {"model_id": "m", "name": "n"}],
                    }
                ],
            },
            422,
            "VALIDATION_ERROR",
        ),
        (
            {
                "version": 1,
                "providers": [
                    {
                        "name": "x",
                        "type": "openai",
                        "models": [{"model_id": "m", "name": "m", "capabilities": {"x": {}}}],
                    }
                ],
            },
            422,
            "VALIDATION_ERROR",
        ),
        (
            {
                "version": 1,
                "providers": [
                    good,
                    {"name": "many", "type": "openai", "endpoints": [{"name": f"e{i}"} for i in range(11)]},
                ],
            },
            409,
            "LIMIT_EXCEEDED",
        ),
    ]
    for doc, status, code in cases:
        assert_error(await client.post(f"{API}/config/import", json=doc, headers=admin_headers), status, code)
    # Nothing from the failed imports was kept, not even the valid provider that came first.
    assert (await client.get(f"{API}/providers", headers=admin_headers)).json()["total"] == 0

    # Limits count what is already stored too.
    existing = await post(client, admin_headers, "/providers", {"name": "full", "type": "openai"})
    for index in range(9):
        await post(client, admin_headers, f"/providers/{existing['id']}/endpoints", {"name": f"old{index}"})
    over = {
        "version": 1,
        "providers": [{"name": "full", "type": "openai", "endpoints": [{"name": "new1"}, {"name": "new2"}]}],
    }
    assert_error(await client.post(f"{API}/config/import", json=over, headers=admin_headers), 409, "LIMIT_EXCEEDED")
    # Changing a provider's type is checked against its stored endpoints.
    retype = {"version": 1, "providers": [{"name": "full", "type": "aws_bedrock"}]}
    assert_error(await client.post(f"{API}/config/import", json=retype, headers=admin_headers), 422, "VALIDATION_ERROR")
    endpoints = (await client.get(f"{API}/providers/{existing['id']}/endpoints", headers=admin_headers)).json()
    assert endpoints["total"] == 9
    assert (await client.get(f"{API}/providers/{existing['id']}", headers=admin_headers)).json()["type"] == "openai"
    async with context.database.sessionmaker() as session:
        assert list(await session.scalars(select(AuditLog).where(AuditLog.action == "import"))) == []


async def test_import_needs_admin(client: httpx.AsyncClient, role_headers: Any) -> None:
    for role in ("viewer", "operator"):
        headers = await role_headers(role)
        response = await client.post(f"{API}/config/import", json={"version": 1, "providers": []}, headers=headers)
        assert_error(response, 403, "FORBIDDEN")
    assert_error(await client.post(f"{API}/config/import", json={"version": 1, "providers": []}), 401, "UNAUTHORIZED")


async def test_partial_entries_keep_stored_values_and_one_default(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    provider = await post(client, admin_headers, "/providers", {"name": "p", "type": "openai", "description": "d"})
    primary = await post(
        client,
        admin_headers,
        f"/providers/{provider['id']}/endpoints",
        {"name": "primary", "base_url": "https://a.example.com", "is_default": True, "timeout_read": 30},
    )
    doc = {
        "version": 1,
        "providers": [
            {
                "name": "p",
                "type": "openai",
                "endpoints": [{"name": "primary", "priority": 7}, {"name": "new", "is_default": True}],
            }
        ],
    }
    result = await client.post(f"{API}/config/import", json=doc, headers=admin_headers)
    assert result.status_code == 200, result.text
    assert result.json()["created"]["endpoints"] == 1 and result.json()["updated"]["endpoints"] == 1
    stored = (await client.get(f"{API}/endpoints/{primary['id']}", headers=admin_headers)).json()
    assert (stored["priority"], stored["is_default"]) == (7, False)
    assert (stored["base_url"], stored["timeout_read"]) == ("https://a.example.com", 30)  # absent: kept
    assert (await client.get(f"{API}/providers/{provider['id']}", headers=admin_headers)).json()["description"] == "d"
    listing = (await client.get(f"{API}/providers/{provider['id']}/endpoints", headers=admin_headers)).json()
    assert [e["name"] for e in listing["items"] if e["is_default"]] == ["new"]
    repeat = await client.post(f"{API}/config/import", json=doc, headers=admin_headers)
    assert repeat.json()["unchanged"] == {"providers": 1, "endpoints": 2, "models": 0}
