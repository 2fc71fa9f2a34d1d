"""Credentials (access keys): encryption at rest, masking, rotation, revocation, expiry, limits, decryption."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from aiops_executor.audit.models import AuditLog
from aiops_executor.core.context import AppContext
from aiops_executor.core.errors import AppError
from aiops_executor.llm import service
from aiops_executor.llm.models import ProviderCredential
from aiops_executor.llm.schemas import CredentialRead
from tests.helpers import API, assert_error, make_provider

API_KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c"
SECRET_KEY = "aws-secret-Zm9vYmFyYmF6cXV4"
ACCESS_TOKEN = "session-token-8d7c6b5a4f3e2d1c"
READ_FIELDS = {
    "id",
    "provider_id",
    "alias",
    "api_key_masked",
    "has_secret_key",
    "has_access_token",
    "expires_at",
    "quota_limit",
    "quota_used",
    "is_active",
    "validation_status",
    "last_validated_at",
    "created_at",
    "updated_at",
}


async def make_credential(
    client: httpx.AsyncClient, headers: dict[str, str], provider_id: str, alias: str = "main", **extra: Any
) -> dict[str, Any]:
    body = {"alias": alias, "api_key": API_KEY, **extra}
    response = await client.post(f"{API}/providers/{provider_id}/credentials", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def raw_rows(context: AppContext, table: str) -> list[dict[str, Any]]:
    async with context.database.engine.connect() as connection:
        result = await connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed table names
        return [dict(row._mapping) for row in result]


async def credential_row(context: AppContext, credential_id: str) -> ProviderCredential:
    async with context.database.sessionmaker() as session:
        row = await session.get(ProviderCredential, uuid.UUID(credential_id))
        assert row is not None
        return row


async def test_create_encrypts_masks_and_never_returns_secrets(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    created = await make_credential(
        client,
        admin_headers,
        pid,
        secret_key=SECRET_KEY,
        access_token=ACCESS_TOKEN,
        expires_at=expires,
        quota_limit=1000,
    )
    assert set(created) == READ_FIELDS
    assert created["api_key_masked"] == "sk-l...2b1c"
    assert (created["has_secret_key"], created["has_access_token"]) == (True, True)
    assert created["validation_status"] == "unknown"
    assert (created["quota_limit"], created["quota_used"], created["is_active"]) == (1000, 0, True)

    responses = [
        created,
        (await client.get(f"{API}/credentials/{created['id']}", headers=admin_headers)).json(),
        (await client.get(f"{API}/providers/{pid}/credentials", headers=admin_headers)).json(),
    ]
    dumped = json.dumps(responses)
    for secret in (API_KEY, SECRET_KEY, ACCESS_TOKEN):
        assert secret not in dumped
    assert "encrypted" not in dumped

    # Nothing stored holds the plaintext: not the credential row, not the audit log.
    for table in ("provider_credentials", "audit_logs"):
        stored = json.dumps(await raw_rows(context, table), default=str)
        for secret in (API_KEY, SECRET_KEY, ACCESS_TOKEN):
            assert secret not in stored, table
    row = await credential_row(context, created["id"])
    assert row.api_key_encrypted.startswith("v1.test-1.")
    assert row.secret_key_encrypted and row.access_token_encrypted

    decrypted = await service.decrypt_credential(context, row)
    assert (decrypted.api_key, decrypted.secret_key, decrypted.access_token) == (API_KEY, SECRET_KEY, ACCESS_TOKEN)
    assert API_KEY not in repr(decrypted) and SECRET_KEY not in repr(decrypted)


async def test_short_key_fully_masked_and_optional_secrets(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    pid = await make_provider(client, admin_headers)
    created = await make_credential(client, admin_headers, pid, api_key="short-key")
    assert created["api_key_masked"] == "****"
    assert (created["has_secret_key"], created["has_access_token"]) == (False, False)
    assert created["expires_at"] is None and created["quota_limit"] is None


async def test_key_length_limit_and_errors_never_echo_keys(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    pid = await make_provider(client, admin_headers)
    url = f"{API}/providers/{pid}/credentials"
    at_limit = "k" * 500
    assert (
        await client.post(url, json={"alias": "max", "api_key": at_limit}, headers=admin_headers)
    ).status_code == 201

    oversized = "sk-" + "Q" * 498
    response = await client.post(url, json={"alias": "big", "api_key": oversized}, headers=admin_headers)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert body["details"]["errors"][0]["loc"] == ["body", "api_key"]
    assert "Q" * 20 not in response.text

    # A request rejected by schema validation for another field must not echo the key either.
    bad_quota = await client.post(
        url, json={"alias": "q", "api_key": API_KEY, "quota_limit": -1}, headers=admin_headers
    )
    assert_error(bad_quota, 422, "VALIDATION_ERROR")
    assert API_KEY not in bad_quota.text
    not_a_string = await client.post(url, json={"alias": "n", "api_key": {"k": API_KEY}}, headers=admin_headers)
    assert_error(not_a_string, 422, "VALIDATION_ERROR")
    assert API_KEY not in not_a_string.text
    empty = await client.post(url, json={"alias": "e", "api_key": ""}, headers=admin_headers)
    assert_error(empty, 422, "VALIDATION_ERROR")
    naive = await client.post(
        url, json={"alias": "t", "api_key": API_KEY, "expires_at": "2030-01-01T00:00:00"}, headers=admin_headers
    )
    assert_error(naive, 422, "VALIDATION_ERROR")
    assert API_KEY not in naive.text

    created = (await client.get(url, headers=admin_headers)).json()
    assert [c["alias"] for c in created["items"]] == ["max"]
    rotate = await client.put(
        f"{API}/credentials/{created['items'][0]['id']}", json={"api_key": oversized}, headers=admin_headers
    )
    assert_error(rotate, 422, "VALIDATION_ERROR")
    assert "Q" * 20 not in rotate.text


async def test_alias_unique_limit_and_simulator(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers)
    other = await make_provider(client, admin_headers, "other")
    await make_credential(client, admin_headers, pid, "k0")
    await make_credential(client, admin_headers, other, "k0")
    duplicate = await client.post(
        f"{API}/providers/{pid}/credentials", json={"alias": "k0", "api_key": "x"}, headers=admin_headers
    )
    assert_error(duplicate, 409, "CREDENTIAL_ALIAS_EXISTS")
    for index in range(1, 20):
        await make_credential(client, admin_headers, pid, f"k{index}")
    over = await client.post(
        f"{API}/providers/{pid}/credentials", json={"alias": "k20", "api_key": "x"}, headers=admin_headers
    )
    body = assert_error(over, 409, "LIMIT_EXCEEDED")
    assert body["details"]["limit"] == 20
    second = (
        await client.get(f"{API}/providers/{pid}/credentials", params={"page": 2, "size": 15}, headers=admin_headers)
    ).json()
    assert second["total"] == 20 and len(second["items"]) == 5

    sim = await make_provider(client, admin_headers, "sim", "simulator")
    refused = await client.post(
        f"{API}/providers/{sim}/credentials", json={"alias": "a", "api_key": "x"}, headers=admin_headers
    )
    body = assert_error(refused, 422, "VALIDATION_ERROR")
    assert "simulator" in body["error_message"]


async def test_expired_credentials_are_reported_expired(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    expired = await make_credential(client, admin_headers, pid, "old", expires_at=past)
    fresh = await make_credential(client, admin_headers, pid, "new")
    assert expired["validation_status"] == "expired"
    assert (await client.get(f"{API}/credentials/{expired['id']}", headers=admin_headers)).json()[
        "validation_status"
    ] == "expired"
    items = (await client.get(f"{API}/providers/{pid}/credentials", headers=admin_headers)).json()["items"]
    assert {c["alias"]: c["validation_status"] for c in items} == {"old": "expired", "new": "unknown"}

    # A cached entry turns expired once its time passes, without any write in between.
    soon = datetime.now(UTC) + timedelta(seconds=30)
    await client.put(f"{API}/credentials/{fresh['id']}", json={"expires_at": soon.isoformat()}, headers=admin_headers)
    current = await client.get(f"{API}/credentials/{fresh['id']}", headers=admin_headers)
    assert current.json()["validation_status"] == "unknown"
    later = service.present_credential(CredentialRead.model_validate(current.json()), soon + timedelta(seconds=1))
    assert later.validation_status.value == "expired"

    async with context.database.sessionmaker() as session:
        usable = await service.usable_credentials(session, uuid.UUID(pid))
    assert [c.alias for c in usable] == ["new"]


async def test_usable_credentials_skip_inactive_over_quota_and_bad(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    ok = await make_credential(client, admin_headers, pid, "ok", quota_limit=10)
    inactive = await make_credential(client, admin_headers, pid, "inactive")
    spent = await make_credential(client, admin_headers, pid, "spent", quota_limit=5)
    invalid = await make_credential(client, admin_headers, pid, "invalid")
    await client.put(f"{API}/credentials/{inactive['id']}", json={"is_active": False}, headers=admin_headers)
    async with context.database.sessionmaker() as session:
        await session.execute(
            update(ProviderCredential).where(ProviderCredential.id == uuid.UUID(spent["id"])).values(quota_used=5)
        )
        await session.execute(
            update(ProviderCredential)
            .where(ProviderCredential.id == uuid.UUID(invalid["id"]))
            .values(validation_status="invalid")
        )
        await session.commit()
        usable = await service.usable_credentials(session, uuid.UUID(pid))
    assert [c.id for c in usable] == [uuid.UUID(ok["id"])]


async def test_update_and_rotate(client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext) -> None:
    pid = await make_provider(client, admin_headers)
    created = await make_credential(client, admin_headers, pid, secret_key=SECRET_KEY)
    cid = created["id"]
    url = f"{API}/credentials/{cid}"
    before = await credential_row(context, cid)

    edited = await client.put(
        url, json={"alias": "renamed", "quota_limit": 50, "is_active": False}, headers=admin_headers
    )
    assert edited.status_code == 200, edited.text
    assert (edited.json()["alias"], edited.json()["quota_limit"], edited.json()["is_active"]) == ("renamed", 50, False)
    assert edited.json()["api_key_masked"] == created["api_key_masked"]
    assert (await credential_row(context, cid)).api_key_encrypted == before.api_key_encrypted

    # Pretend it had been validated; a rotation must reset that.
    async with context.database.sessionmaker() as session:
        await session.execute(
            update(ProviderCredential)
            .where(ProviderCredential.id == uuid.UUID(cid))
            .values(validation_status="valid", last_validated_at=datetime.now(UTC))
        )
        await session.commit()
    context.config_cache.invalidate()

    new_key = "sk-rotated-0123456789abcdef"
    rotated = await client.put(url, json={"api_key": new_key, "secret_key": None}, headers=admin_headers)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["api_key_masked"] == "sk-r...cdef"
    assert body["has_secret_key"] is False
    assert body["validation_status"] == "unknown" and body["last_validated_at"] is None
    assert new_key not in rotated.text
    after = await credential_row(context, cid)
    assert after.api_key_encrypted != before.api_key_encrypted
    assert after.secret_key_encrypted is None
    assert (await service.decrypt_credential(context, after)).api_key == new_key

    assert_error(await client.put(url, json={"api_key": None}, headers=admin_headers), 422, "VALIDATION_ERROR")
    other = await make_credential(client, admin_headers, pid, "other")
    clash = await client.put(f"{API}/credentials/{other['id']}", json={"alias": "renamed"}, headers=admin_headers)
    assert_error(clash, 409, "CREDENTIAL_ALIAS_EXISTS")

    async with context.database.sessionmaker() as session:
        rows = list(
            await session.scalars(select(AuditLog).where(AuditLog.resource_id == cid).order_by(AuditLog.created_at))
        )
    assert [r.action for r in rows] == ["create", "update", "rotate"]
    assert sorted(rows[1].details["fields"]) == ["alias", "is_active", "quota_limit"]
    assert sorted(rows[2].details["fields"]) == ["api_key", "secret_key"]
    assert new_key not in json.dumps([r.details for r in rows])


async def test_revoke_destroys_the_row(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    created = await make_credential(client, admin_headers, pid)
    assert (await client.delete(f"{API}/credentials/{created['id']}", headers=admin_headers)).status_code == 204
    assert_error(
        await client.get(f"{API}/credentials/{created['id']}", headers=admin_headers), 404, "CREDENTIAL_NOT_FOUND"
    )
    assert_error(
        await client.delete(f"{API}/credentials/{created['id']}", headers=admin_headers), 404, "CREDENTIAL_NOT_FOUND"
    )
    assert await raw_rows(context, "provider_credentials") == []
    async with context.database.sessionmaker() as session:
        actions = list(
            await session.scalars(
                select(AuditLog.action).where(AuditLog.resource_id == created["id"]).order_by(AuditLog.created_at)
            )
        )
    assert actions == ["create", "delete"]


@pytest.mark.parametrize("damage", ["tamper", "swap"])
async def test_undecryptable_credentials_are_flagged(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext, damage: str
) -> None:
    pid = await make_provider(client, admin_headers)
    first = await make_credential(client, admin_headers, pid, "first")
    second = await make_credential(client, admin_headers, pid, "second", api_key="sk-second-key-abcdef123456")
    assert (await client.get(f"{API}/credentials/{first['id']}", headers=admin_headers)).json()[
        "validation_status"
    ] == "unknown"  # now cached

    one, two = await credential_row(context, first["id"]), await credential_row(context, second["id"])
    if damage == "tamper":
        version, key_id, wrapped, sealed = one.api_key_encrypted.split(".")
        flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
        values = {first["id"]: ".".join((version, key_id, wrapped, flipped))}
    else:  # a ciphertext copied from another row must not open under this row's id
        values = {first["id"]: two.api_key_encrypted, second["id"]: one.api_key_encrypted}
    async with context.database.sessionmaker() as session:
        for cid, stored in values.items():
            await session.execute(
                update(ProviderCredential)
                .where(ProviderCredential.id == uuid.UUID(cid))
                .values(api_key_encrypted=stored)
            )
        await session.commit()

    row = await credential_row(context, first["id"])
    with pytest.raises(AppError) as caught:
        await service.decrypt_credential(context, row)
    assert caught.value.error_code == "CREDENTIAL_UNDECRYPTABLE"
    assert caught.value.status_code == 409
    assert API_KEY not in str(caught.value) and API_KEY not in json.dumps(caught.value.details)
    assert row.validation_status == "undecryptable"
    assert (await credential_row(context, first["id"])).validation_status == "undecryptable"
    # The flag is committed and the cache was invalidated, so the API shows it at once.
    assert (await client.get(f"{API}/credentials/{first['id']}", headers=admin_headers)).json()[
        "validation_status"
    ] == "undecryptable"
    async with context.database.sessionmaker() as session:
        usable = await service.usable_credentials(session, uuid.UUID(pid))
    assert [c.alias for c in usable] == ["second"]
    if damage == "swap":
        with pytest.raises(AppError):
            await service.decrypt_credential(context, usable[0])
        async with context.database.sessionmaker() as session:
            assert await service.usable_credentials(session, uuid.UUID(pid)) == []
    else:
        assert (await service.decrypt_credential(context, usable[0])).api_key == "sk-second-key-abcdef123456"

    # Re-entering the key (a rotation) makes it usable again.
    fixed = await client.put(f"{API}/credentials/{first['id']}", json={"api_key": API_KEY}, headers=admin_headers)
    assert fixed.json()["validation_status"] == "unknown"
    assert (await service.decrypt_credential(context, await credential_row(context, first["id"]))).api_key == API_KEY


async def test_decrypt_accepts_a_snapshot_of_the_row(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    created = await make_credential(client, admin_headers, pid, access_token=ACCESS_TOKEN)
    row = await credential_row(context, created["id"])
    columns = ("id", "provider_id", "alias", "api_key_encrypted", "secret_key_encrypted", "access_token_encrypted")
    snapshot = SimpleNamespace(**{name: getattr(row, name) for name in columns})
    opened = await service.decrypt_credential(context, snapshot)
    assert (opened.api_key, opened.secret_key, opened.access_token) == (API_KEY, None, ACCESS_TOKEN)
    assert opened.credential_id == row.id and opened.alias == "main"

    # A ciphertext moved to another column of the same row does not open either.
    moved = SimpleNamespace(**{**vars(snapshot), "api_key_encrypted": row.access_token_encrypted})
    with pytest.raises(AppError) as caught:
        await service.decrypt_credential(context, moved)
    assert caught.value.error_code == "CREDENTIAL_UNDECRYPTABLE"
    assert (await credential_row(context, created["id"])).validation_status == "undecryptable"
