"""Providers: CRUD, filters, soft delete, uniqueness, roles, audit and the read cache."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine

from aiops_executor.audit.models import AuditLog
from aiops_executor.auth.dependencies import RoleGuard
from aiops_executor.core.context import AppContext
from aiops_executor.llm import service
from aiops_executor.llm.models import Provider, ProviderCredential
from tests.helpers import API, assert_error


async def make_provider(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "openai-main", **extra: Any
) -> dict[str, Any]:
    body = {"name": name, "type": "openai", **extra}
    response = await client.post(f"{API}/providers", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def audit_rows(context: AppContext, resource_type: str, resource_id: object | None = None) -> list[AuditLog]:
    async with context.database.sessionmaker() as session:
        stmt = select(AuditLog).where(AuditLog.resource_type == resource_type).order_by(AuditLog.created_at)
        if resource_id is not None:
            stmt = stmt.where(AuditLog.resource_id == str(resource_id))
        return list(await session.scalars(stmt))


@contextmanager
def statements_on(engine: Engine, table: str) -> Iterator[list[str]]:
    seen: list[str] = []
    pattern = re.compile(rf"\b{table}\b", re.IGNORECASE)

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if pattern.search(statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


async def test_provider_crud_and_audit(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    created = await make_provider(client, admin_headers, description="primary")
    assert created["name"] == "openai-main"
    assert created["type"] == "openai"
    assert created["description"] == "primary"
    assert created["is_active"] is True
    assert created["created_at"].endswith(("Z", "+00:00"))
    provider_id = created["id"]

    got = await client.get(f"{API}/providers/{provider_id}", headers=admin_headers)
    assert got.status_code == 200
    assert got.json() == created

    updated = await client.put(
        f"{API}/providers/{provider_id}", json={"name": "openai-eu", "description": None}, headers=admin_headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["name"] == "openai-eu"
    assert updated.json()["description"] is None
    assert updated.json()["type"] == "openai"  # omitted fields keep their value

    status = await client.patch(
        f"{API}/providers/{provider_id}/status", json={"is_active": False}, headers=admin_headers
    )
    assert status.status_code == 200
    assert status.json()["is_active"] is False

    deleted = await client.delete(f"{API}/providers/{provider_id}", headers=admin_headers)
    assert deleted.status_code == 204
    assert deleted.content == b""

    rows = await audit_rows(context, "provider", provider_id)
    assert [r.action for r in rows] == ["create", "update", "status_change", "delete"]
    assert sorted(rows[1].details["fields"]) == ["description", "name"]
    assert rows[2].details["is_active"] is False
    assert all(r.actor == "user:admin" for r in rows)
    assert all(r.request_id for r in rows)


async def test_unchanged_update_records_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    provider = await make_provider(client, admin_headers)
    same = await client.put(f"{API}/providers/{provider['id']}", json={"name": "openai-main"}, headers=admin_headers)
    assert same.status_code == 200
    assert same.json()["updated_at"] == provider["updated_at"]
    status = await client.patch(
        f"{API}/providers/{provider['id']}/status", json={"is_active": True}, headers=admin_headers
    )
    assert status.status_code == 200
    assert [r.action for r in await audit_rows(context, "provider", provider["id"])] == ["create"]


async def test_list_filters_and_pagination(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    await make_provider(client, admin_headers, "a-openai")
    await make_provider(client, admin_headers, "b-anthropic", type="anthropic")
    third = await make_provider(client, admin_headers, "c-openai")
    await client.patch(f"{API}/providers/{third['id']}/status", json={"is_active": False}, headers=admin_headers)

    everything = (await client.get(f"{API}/providers", headers=admin_headers)).json()
    assert [p["name"] for p in everything["items"]] == ["a-openai", "b-anthropic", "c-openai"]
    assert (everything["total"], everything["page"], everything["size"], everything["pages"]) == (3, 1, 20, 1)

    by_type = (await client.get(f"{API}/providers", params={"type": "openai"}, headers=admin_headers)).json()
    assert [p["name"] for p in by_type["items"]] == ["a-openai", "c-openai"]
    inactive = (await client.get(f"{API}/providers", params={"is_active": "false"}, headers=admin_headers)).json()
    assert [p["name"] for p in inactive["items"]] == ["c-openai"]
    both = await client.get(f"{API}/providers", params={"type": "openai", "is_active": "true"}, headers=admin_headers)
    assert [p["name"] for p in both.json()["items"]] == ["a-openai"]

    paged = (await client.get(f"{API}/providers", params={"page": 2, "size": 2}, headers=admin_headers)).json()
    assert [p["name"] for p in paged["items"]] == ["c-openai"]
    assert (paged["total"], paged["page"], paged["size"], paged["pages"]) == (3, 2, 2, 2)

    assert_error(
        await client.get(f"{API}/providers", params={"type": "nope"}, headers=admin_headers), 422, "VALIDATION_ERROR"
    )
    assert_error(
        await client.get(f"{API}/providers", params={"size": 101}, headers=admin_headers), 422, "VALIDATION_ERROR"
    )


async def test_validation(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    long_name = await client.post(f"{API}/providers", json={"name": "x" * 101, "type": "openai"}, headers=admin_headers)
    assert_error(long_name, 422, "VALIDATION_ERROR")
    assert (
        await client.post(f"{API}/providers", json={"name": "x" * 100, "type": "openai"}, headers=admin_headers)
    ).status_code == 201
    bad_type = await client.post(f"{API}/providers", json={"name": "p", "type": "gpt"}, headers=admin_headers)
    assert_error(bad_type, 422, "VALIDATION_ERROR")
    blank = await client.post(f"{API}/providers", json={"name": "  ", "type": "openai"}, headers=admin_headers)
    assert_error(blank, 422, "VALIDATION_ERROR")
    provider = await make_provider(client, admin_headers)
    null_name = await client.put(f"{API}/providers/{provider['id']}", json={"name": None}, headers=admin_headers)
    assert_error(null_name, 422, "VALIDATION_ERROR")
    for provider_type in (
        "openai",
        "azure_openai",
        "anthropic",
        "aws_bedrock",
        "aliyun_dashscope",
        "baidu_qianfan",
        "ollama",
        "vllm",
        "openai_compatible",
        "simulator",
    ):
        ok = await client.post(
            f"{API}/providers", json={"name": f"t-{provider_type}", "type": provider_type}, headers=admin_headers
        )
        assert ok.status_code == 201, ok.text


async def test_name_uniqueness_and_reuse_after_delete(
    client: httpx.AsyncClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await make_provider(client, admin_headers, "shared")
    duplicate = await client.post(
        f"{API}/providers", json={"name": "shared", "type": "anthropic"}, headers=admin_headers
    )
    assert_error(duplicate, 409, "PROVIDER_NAME_EXISTS")
    other = await make_provider(client, admin_headers, "other")
    rename = await client.put(f"{API}/providers/{other['id']}", json={"name": "shared"}, headers=admin_headers)
    assert_error(rename, 409, "PROVIDER_NAME_EXISTS")

    # A race that slips past the pre-check is still a 409 thanks to the partial unique index.
    async def no_check(*_args: Any, **_kwargs: Any) -> None:
        return None

    monkeypatch.setattr(service.providers, "_ensure_provider_name_free", no_check)
    raced = await client.post(f"{API}/providers", json={"name": "shared", "type": "openai"}, headers=admin_headers)
    assert_error(raced, 409, "PROVIDER_NAME_EXISTS")
    monkeypatch.undo()

    assert (await client.delete(f"{API}/providers/{first['id']}", headers=admin_headers)).status_code == 204
    reused = await client.post(f"{API}/providers", json={"name": "shared", "type": "openai"}, headers=admin_headers)
    assert reused.status_code == 201
    assert reused.json()["id"] != first["id"]


async def test_deleted_provider_is_gone_everywhere(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    provider = await make_provider(client, admin_headers)
    pid = provider["id"]
    endpoint = (await client.post(f"{API}/providers/{pid}/endpoints", json={"name": "e"}, headers=admin_headers)).json()
    credential = (
        await client.post(
            f"{API}/providers/{pid}/credentials",
            json={"alias": "k", "api_key": "sk-abcdefghijklmnop"},
            headers=admin_headers,
        )
    ).json()
    model = (
        await client.post(
            f"{API}/providers/{pid}/models", json={"model_id": "gpt-4o", "name": "GPT-4o"}, headers=admin_headers
        )
    ).json()
    # Warm the cache so the delete must invalidate it.
    assert (await client.get(f"{API}/providers/{pid}", headers=admin_headers)).status_code == 200
    assert (await client.get(f"{API}/models", headers=admin_headers)).json()["total"] == 1

    assert (await client.delete(f"{API}/providers/{pid}", headers=admin_headers)).status_code == 204

    for method, path in [
        ("GET", f"/providers/{pid}"),
        ("PUT", f"/providers/{pid}"),
        ("PATCH", f"/providers/{pid}/status"),
        ("DELETE", f"/providers/{pid}"),
        ("GET", f"/providers/{pid}/endpoints"),
        ("POST", f"/providers/{pid}/endpoints"),
        ("GET", f"/providers/{pid}/credentials"),
        ("POST", f"/providers/{pid}/credentials"),
        ("POST", f"/providers/{pid}/models"),
        ("POST", f"/providers/{pid}/models/sync"),
    ]:
        body = {"is_active": True} if method == "PATCH" else {}
        if method == "POST" and path.endswith("endpoints"):
            body = {"name": "x"}
        if method == "POST" and path.endswith("credentials"):
            body = {"alias": "x", "api_key": "y"}
        if method == "POST" and path.endswith("models"):
            body = {"model_id": "x", "name": "y"}
        payload = None if method in ("GET", "DELETE") else body
        response = await client.request(method, f"{API}{path}", json=payload, headers=admin_headers)
        assert_error(response, 404, "PROVIDER_NOT_FOUND")
    assert_error(
        await client.get(f"{API}/endpoints/{endpoint['id']}", headers=admin_headers), 404, "ENDPOINT_NOT_FOUND"
    )
    assert_error(
        await client.get(f"{API}/credentials/{credential['id']}", headers=admin_headers), 404, "CREDENTIAL_NOT_FOUND"
    )
    assert_error(await client.get(f"{API}/models/{model['id']}", headers=admin_headers), 404, "MODEL_NOT_FOUND")
    assert_error(await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers), 404, "MODEL_NOT_FOUND")
    listing = (await client.get(f"{API}/providers", headers=admin_headers)).json()
    assert listing["total"] == 0
    assert (await client.get(f"{API}/models", headers=admin_headers)).json()["total"] == 0
    by_cap = await client.get(f"{API}/models/by-capability/chat", headers=admin_headers)
    assert by_cap.json()["total"] == 0

    async with context.database.sessionmaker() as session:
        row = await session.get(Provider, uuid.UUID(pid))
        assert row is not None and row.deleted_at is not None  # soft delete keeps the row
        remaining = await session.scalar(
            select(func.count()).select_from(ProviderCredential).where(ProviderCredential.provider_id == row.id)
        )
        assert remaining == 0  # its credentials were revoked
    rows = await audit_rows(context, "provider", pid)
    assert rows[-1].action == "delete" and rows[-1].details["credentials_revoked"] == 1


async def test_not_found_and_bad_ids(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    missing = uuid.uuid4()
    body = assert_error(
        await client.get(f"{API}/providers/{missing}", headers=admin_headers), 404, "PROVIDER_NOT_FOUND"
    )
    assert body["details"] == {"id": str(missing)}
    assert_error(
        await client.put(f"{API}/providers/{missing}", json={}, headers=admin_headers), 404, "PROVIDER_NOT_FOUND"
    )
    assert_error(await client.delete(f"{API}/providers/{missing}", headers=admin_headers), 404, "PROVIDER_NOT_FOUND")
    assert_error(await client.get(f"{API}/providers/not-a-uuid", headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_type_change_is_checked_against_children(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    provider = await make_provider(client, admin_headers)
    pid = provider["id"]
    assert (
        await client.post(f"{API}/providers/{pid}/endpoints", json={"name": "e"}, headers=admin_headers)
    ).status_code == 201
    to_simulator = await client.put(f"{API}/providers/{pid}", json={"type": "simulator"}, headers=admin_headers)
    assert_error(to_simulator, 422, "VALIDATION_ERROR")
    to_azure = await client.put(f"{API}/providers/{pid}", json={"type": "azure_openai"}, headers=admin_headers)
    body = assert_error(to_azure, 422, "VALIDATION_ERROR")
    assert "base_url" in body["error_message"] and "api_version" in body["error_message"]
    to_anthropic = await client.put(f"{API}/providers/{pid}", json={"type": "anthropic"}, headers=admin_headers)
    assert to_anthropic.status_code == 200
    assert to_anthropic.json()["type"] == "anthropic"


async def test_roles(client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: Any) -> None:
    provider = await make_provider(client, admin_headers)
    viewer = await role_headers("viewer")
    operator = await role_headers("operator")
    for headers in (viewer, operator):
        assert (await client.get(f"{API}/providers", headers=headers)).status_code == 200
        assert (await client.get(f"{API}/providers/{provider['id']}", headers=headers)).status_code == 200
        assert_error(
            await client.post(f"{API}/providers", json={"name": "n", "type": "openai"}, headers=headers),
            403,
            "FORBIDDEN",
        )
        assert_error(await client.put(f"{API}/providers/{provider['id']}", json={}, headers=headers), 403, "FORBIDDEN")
        assert_error(await client.delete(f"{API}/providers/{provider['id']}", headers=headers), 403, "FORBIDDEN")
        assert_error(await client.get(f"{API}/config/export", headers=headers), 403, "FORBIDDEN")
    assert_error(await client.get(f"{API}/providers"), 401, "UNAUTHORIZED")


async def test_every_llm_route_has_exactly_one_role_guard(client: httpx.AsyncClient) -> None:
    from aiops_executor.llm.endpoints import router

    checked = 0
    for route in router.routes:
        assert isinstance(route, APIRoute)
        guards = [dep.call for dep in route.dependant.dependencies if isinstance(dep.call, RoleGuard)]
        assert len(guards) == 1, (route.path, route.methods)
        expected = "viewer" if route.methods == {"GET"} and route.path != "/config/export" else "admin"
        assert guards[0].min_role.value == expected, (route.path, route.methods)
        checked += 1
    assert checked == 28
    # ... and they are all served under /api/v1.
    published = (await client.get("/openapi.json")).json()["paths"]
    for route in router.routes:
        assert isinstance(route, APIRoute)
        assert f"{API}{route.path}" in published


async def test_reads_are_cached_and_writes_invalidate(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    provider = await make_provider(client, admin_headers)
    url = f"{API}/providers/{provider['id']}"
    engine = context.database.engine.sync_engine
    with statements_on(engine, "providers") as seen:
        assert (await client.get(url, headers=admin_headers)).status_code == 200
        first = len(seen)
        assert first >= 1
        assert (await client.get(url, headers=admin_headers)).json()["name"] == "openai-main"
        assert len(seen) == first  # served from the cache
        listing = await client.get(f"{API}/providers", headers=admin_headers)
        after_list = len(seen)
        assert (await client.get(f"{API}/providers", headers=admin_headers)).json() == listing.json()
        assert len(seen) == after_list

    renamed = await client.put(url, json={"name": "renamed"}, headers=admin_headers)
    assert renamed.status_code == 200
    assert (await client.get(url, headers=admin_headers)).json()["name"] == "renamed"
    assert [p["name"] for p in (await client.get(f"{API}/providers", headers=admin_headers)).json()["items"]] == [
        "renamed"
    ]
