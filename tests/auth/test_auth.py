"""Sign-in, users, API keys and the bootstrap admin."""

from __future__ import annotations

import stat
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from aiops_executor.app import create_app
from aiops_executor.auth.security import issue_access_token
from aiops_executor.core.context import AppContext
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, RoleHeaders, login, make_settings


async def test_token_is_a_bearer_jwt_naming_the_user(client: httpx.AsyncClient, context: AppContext) -> None:
    response = await client.post("/api/v1/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == context.settings.access_token_expire_minutes * 60
    claims = jwt.decode(body["access_token"], context.secrets.jwt_secret, algorithms=["HS256"])
    assert claims["role"] == "admin"


@pytest.mark.parametrize(
    ("username", "password"), [(ADMIN_USERNAME, "wrong-password"), ("nobody", ADMIN_PASSWORD), ("", "")]
)
async def test_bad_sign_in_is_rejected(client: httpx.AsyncClient, username: str, password: str) -> None:
    response = await client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code in (401, 422)
    body = response.json()
    assert body["error_code"] in ("UNAUTHORIZED", "VALIDATION_ERROR")
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert password not in response.text or not password


async def test_routes_reject_missing_malformed_and_forged_tokens(
    client: httpx.AsyncClient, context: AppContext
) -> None:
    assert (await client.get("/api/v1/users/me")).status_code == 401
    assert (await client.get("/api/v1/users/me", headers={"Authorization": "Basic abc"})).status_code == 401
    forged = jwt.encode(
        {"sub": "00000000-0000-0000-0000-000000000000", "exp": 9999999999}, "not-the-secret-" + "y" * 32
    )
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHORIZED"


async def test_expired_token_is_rejected(client: httpx.AsyncClient, context: AppContext) -> None:
    me = await client.get("/api/v1/users/me", headers=await login(client, ADMIN_USERNAME, ADMIN_PASSWORD))
    user_id = me.json()["id"]
    expired = issue_access_token(
        uuid.UUID(user_id),
        "admin",
        secret=context.secrets.jwt_secret,
        algorithm="HS256",
        lifetime=timedelta(seconds=-5),
    )
    response = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {expired.token}"})
    assert response.status_code == 401


async def test_user_lifecycle(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    created = await client.post(
        "/api/v1/users",
        json={"username": "ops-1", "password": "long-password", "role": "operator"},
        headers=admin_headers,
    )
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["username"] == "ops-1" and user["role"] == "operator"
    assert "password" not in created.text and "long-password" not in created.text

    duplicate = await client.post(
        "/api/v1/users",
        json={"username": "ops-1", "password": "other-password", "role": "viewer"},
        headers=admin_headers,
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["error_code"] == "USERNAME_EXISTS"

    listing = await client.get("/api/v1/users", headers=admin_headers, params={"size": 1})
    assert listing.status_code == 200
    page = listing.json()
    assert page["total"] == 2 and page["size"] == 1 and page["pages"] == 2 and len(page["items"]) == 1

    headers = await login(client, "ops-1", "long-password")
    me = await client.get("/api/v1/users/me", headers=headers)
    assert me.json()["id"] == user["id"]

    deleted = await client.delete(f"/api/v1/users/{user['id']}", headers=admin_headers)
    assert deleted.status_code == 204
    # A deleted user's still-valid token stops working at once.
    assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 401
    missing = await client.delete(f"/api/v1/users/{user['id']}", headers=admin_headers)
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "USER_NOT_FOUND"


async def test_short_password_and_bad_role_are_validation_errors(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/users", json={"username": "x", "password": "short", "role": "root"}, headers=admin_headers
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    fields = {tuple(e["loc"]) for e in body["details"]["errors"]}
    assert ("body", "password") in fields and ("body", "role") in fields
    assert "short" not in response.text.replace("string_too_short", "")


async def test_last_admin_cannot_be_deleted(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    me = (await client.get("/api/v1/users/me", headers=admin_headers)).json()
    response = await client.delete(f"/api/v1/users/{me['id']}", headers=admin_headers)
    assert response.status_code == 409
    assert response.json()["error_code"] == "LAST_ADMIN"


async def test_a_users_role_changes_and_a_disabled_user_is_shut_out_at_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await client.post(
        "/api/v1/users",
        json={"username": "ops-2", "password": "long-password", "role": "viewer"},
        headers=admin_headers,
    )
    user = created.json()
    headers = await login(client, "ops-2", "long-password")
    assert (await client.post("/api/v1/teams", json={}, headers=headers)).status_code == 403  # a viewer

    promoted = await client.patch(f"/api/v1/users/{user['id']}", json={"role": "operator"}, headers=admin_headers)
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["role"], promoted.json()["is_active"]) == ("operator", True)
    # The same token now carries the new role: roles are read per request.
    assert (await client.post("/api/v1/teams", json={}, headers=headers)).status_code == 422

    disabled = await client.patch(f"/api/v1/users/{user['id']}", json={"is_active": False}, headers=admin_headers)
    assert disabled.json()["is_active"] is False
    assert (await client.get("/api/v1/users/me", headers=headers)).status_code == 401  # its token stops at once
    refused = await client.post("/api/v1/auth/token", data={"username": "ops-2", "password": "long-password"})
    assert refused.status_code == 401
    assert (
        await client.patch(f"/api/v1/users/{user['id']}", json={"is_active": None}, headers=admin_headers)
    ).status_code == 422

    entries = (await client.get("/api/v1/audit-logs", params={"resource_id": user["id"]}, headers=admin_headers)).json()
    changes = [e["details"] for e in entries["items"] if e["action"] == "update"]
    assert {"username": "ops-2", "is_active": False} in changes and {"username": "ops-2", "role": "operator"} in changes


async def test_the_last_active_admin_keeps_the_role(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    me = (await client.get("/api/v1/users/me", headers=admin_headers)).json()
    for change in ({"role": "operator"}, {"is_active": False}):
        response = await client.patch(f"/api/v1/users/{me['id']}", json=change, headers=admin_headers)
        assert (response.status_code, response.json()["error_code"]) == (409, "LAST_ADMIN")
    second = await client.post(
        "/api/v1/users",
        json={"username": "admin-2", "password": "long-password", "role": "admin"},
        headers=admin_headers,
    )
    other = second.json()
    # A disabled admin is no admin: the one left active still keeps the role.
    assert (
        await client.patch(f"/api/v1/users/{other['id']}", json={"is_active": False}, headers=admin_headers)
    ).status_code == 200
    response = await client.patch(f"/api/v1/users/{me['id']}", json={"role": "viewer"}, headers=admin_headers)
    assert response.status_code == 409
    assert (await client.delete(f"/api/v1/users/{me['id']}", headers=admin_headers)).status_code == 409
    missing = await client.patch(f"/api/v1/users/{uuid.uuid4()}", json={"role": "viewer"}, headers=admin_headers)
    assert (missing.status_code, missing.json()["error_code"]) == (404, "USER_NOT_FOUND")


async def test_api_key_is_shown_once_works_and_revocation_is_immediate(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    created = await client.post("/api/v1/api-keys", json={"name": "ci-bot", "role": "operator"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert set(body) == {"id", "name", "role", "key", "created_at"}

    listing = await client.get("/api/v1/api-keys", headers=admin_headers)
    assert listing.status_code == 200
    assert key not in listing.text
    assert listing.json()["items"][0]["name"] == "ci-bot"

    async with context.database.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_keys"))).all()
    assert all(key not in str(value) for row in rows for value in row)

    key_headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/api/v1/audit-logs", headers=key_headers)).status_code == 403  # operator < admin
    me = await client.get("/api/v1/users/me", headers=key_headers)
    assert me.status_code == 404  # a machine identity is not a user

    revoked = await client.delete(f"/api/v1/api-keys/{body['id']}", headers=admin_headers)
    assert revoked.status_code == 204
    response = await client.get("/api/v1/users", headers=key_headers)
    assert response.status_code == 401
    again = await client.delete(f"/api/v1/api-keys/{body['id']}", headers=admin_headers)
    assert again.json()["error_code"] == "API_KEY_NOT_FOUND"


async def test_unknown_api_key_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me", headers={"Authorization": "Bearer aiops_not-a-real-key"})
    assert response.status_code == 401


async def test_auth_changes_are_audited(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: RoleHeaders
) -> None:
    await role_headers("viewer")
    await client.post("/api/v1/api-keys", json={"name": "k", "role": "viewer"}, headers=admin_headers)
    logs = (await client.get("/api/v1/audit-logs", headers=admin_headers, params={"actor": "user:admin"})).json()
    seen = {(e["action"], e["resource_type"]) for e in logs["items"]}
    assert {("create", "user"), ("create", "api_key")} <= seen
    assert all(e["request_id"] for e in logs["items"])


async def test_dev_mode_without_configured_admin_creates_one_with_a_private_password(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path / "data", admin_username=None, admin_password=None)
    application = create_app(settings)
    async with LifespanManager(application):
        password_file = tmp_path / "data" / "admin_password"
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = await login(client, "admin", password_file.read_text().strip())
            assert (await client.get("/api/v1/users/me", headers=headers)).json()["role"] == "admin"


async def test_prod_never_invents_an_admin(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "data", env="prod", admin_username=None, admin_password=None)
    async with LifespanManager(create_app(settings)):
        assert not (tmp_path / "data" / "admin_password").exists()
