"""GET /audit-logs: every LLM configuration change is there, with actor, request id and time, readable by
admins only, filtered by resource_type, resource_id, action and actor — and never with a secret value."""

from __future__ import annotations

from typing import Any

import httpx

from aiops_devtools.mock_providers import MockLLMServer
from tests.conftest import RoleHeaders
from tests.helpers import API, assert_error
from tests.mock_providers import OPENAI_KEY

ROTATED_KEY = "sk-audit-rotated-key-1a2b3c4d5e"


async def test_every_llm_configuration_change_is_audited_and_filterable(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: RoleHeaders, openai_mock: MockLLMServer
) -> None:
    request_ids: dict[tuple[str, str], str] = {}

    async def change(method: str, path: str, resource: str, action: str, **kwargs: Any) -> dict[str, Any]:
        response = await client.request(method, f"{API}{path}", headers=admin_headers, **kwargs)
        assert response.status_code < 300, response.text
        request_ids[(resource, action)] = response.headers["x-request-id"]
        return dict(response.json()) if response.content else {}

    provider = await change("POST", "/providers", "provider", "create", json={"name": "audited", "type": "openai"})
    pid = provider["id"]
    await change("PUT", f"/providers/{pid}", "provider", "update", json={"description": "d"})
    await change("PATCH", f"/providers/{pid}/status", "provider", "status_change", json={"is_active": False})
    endpoint = await change(
        "POST",
        f"/providers/{pid}/endpoints",
        "endpoint",
        "create",
        json={"name": "e", "base_url": openai_mock.client_base_url},
    )
    await change("PUT", f"/endpoints/{endpoint['id']}", "endpoint", "update", json={"priority": 5})
    credential = await change(
        "POST", f"/providers/{pid}/credentials", "credential", "create", json={"alias": "k", "api_key": OPENAI_KEY}
    )
    cid = credential["id"]
    await change("PUT", f"/credentials/{cid}", "credential", "update", json={"quota_limit": 100})
    await change("POST", f"/credentials/{cid}/validate", "credential", "validate")
    await change("PUT", f"/credentials/{cid}", "credential", "rotate", json={"api_key": ROTATED_KEY})
    model = await change(
        "POST", f"/providers/{pid}/models", "model", "create", json={"model_id": "gpt-4o-mini", "name": "m"}
    )
    await change("PUT", f"/models/{model['id']}", "model", "update", json={"name": "renamed"})
    await change("PUT", f"/credentials/{cid}", "credential", "update-back", json={"api_key": OPENAI_KEY})
    await change("POST", f"/providers/{pid}/models/sync", "provider", "sync")
    await change("DELETE", f"/models/{model['id']}", "model", "delete")
    await change("DELETE", f"/endpoints/{endpoint['id']}", "endpoint", "delete")
    await change("DELETE", f"/credentials/{cid}", "credential", "delete")
    await change("POST", "/config/import", "config", "import", json={"version": 1, "providers": []})
    await change("DELETE", f"/providers/{pid}", "provider", "delete")
    request_ids.pop(("credential", "update-back"))

    async def entries(**filters: str) -> list[dict[str, Any]]:
        response = await client.get(f"{API}/audit-logs", params={"size": 100, **filters}, headers=admin_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "total", "page", "size", "pages"}
        assert body["total"] == len(body["items"])
        return list(body["items"])

    everything = [e for e in await entries() if e["resource_type"] != "user"]
    seen = {(e["resource_type"], e["action"]): e for e in everything}
    for key, request_id in request_ids.items():
        assert key in seen, f"{key} was not audited"
        matching = [e for e in everything if (e["resource_type"], e["action"]) == key]
        assert request_id in {e["request_id"] for e in matching}, key
    assert all(e["actor"] == "user:admin" and e["created_at"].endswith("Z") for e in everything)
    text = repr(everything)
    assert OPENAI_KEY not in text and ROTATED_KEY not in text

    by_credential = await entries(resource_type="credential", resource_id=cid)
    assert [e["action"] for e in reversed(by_credential)] == [
        "create",
        "update",
        "validate",
        "rotate",
        "rotate",
        "delete",
    ]
    assert {e["resource_id"] for e in await entries(resource_id=pid)} == {pid}
    assert {e["resource_type"] for e in await entries(action="delete")} == {
        "provider",
        "endpoint",
        "credential",
        "model",
    }
    assert [e["action"] for e in await entries(resource_type="provider", action="sync")] == ["sync"]
    assert await entries(actor="user:nobody") == []
    assert len(await entries(actor="user:admin")) >= len(request_ids)
    page = (await client.get(f"{API}/audit-logs", params={"size": 2, "page": 2}, headers=admin_headers)).json()
    assert len(page["items"]) == 2 and page["page"] == 2 and page["pages"] >= 2

    for role in ("viewer", "operator"):
        assert_error(await client.get(f"{API}/audit-logs", headers=await role_headers(role)), 403, "FORBIDDEN")


async def test_entries_are_filtered_by_time(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for name in ("early", "late"):
        created = await client.post(f"{API}/providers", json={"name": name, "type": "simulator"}, headers=admin_headers)
        assert created.status_code == 201, created.text
    entries = (
        await client.get(f"{API}/audit-logs", params={"resource_type": "provider"}, headers=admin_headers)
    ).json()
    late, early = entries["items"][0], entries["items"][1]  # newest first
    assert (early["details"]["name"], late["details"]["name"]) == ("early", "late")

    def names(page: dict[str, Any]) -> list[str]:
        return [e["details"]["name"] for e in page["items"]]

    since_late = {"resource_type": "provider", "created_after": late["created_at"]}
    assert names((await client.get(f"{API}/audit-logs", params=since_late, headers=admin_headers)).json()) == ["late"]
    before_late = {"resource_type": "provider", "created_before": late["created_at"]}
    assert names((await client.get(f"{API}/audit-logs", params=before_late, headers=admin_headers)).json()) == ["early"]
    bad = await client.get(f"{API}/audit-logs", params={"created_after": "yesterday"}, headers=admin_headers)
    assert_error(bad, 422, "VALIDATION_ERROR")
