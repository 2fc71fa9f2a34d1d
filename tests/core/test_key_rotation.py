"""Master key rotation re-wraps data keys in place, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import select, update

from aiops_executor.core.context import AppContext
from aiops_executor.core.crypto import Envelope, EnvelopeCipher, associated_data
from aiops_executor.core.key_rotation import encrypted_columns, rotate_master_key
from aiops_executor.llm.models import Provider, ProviderCredential
from aiops_executor.models_registry import metadata

TABLE = "provider_credentials"


async def _seed(context: AppContext, count: int) -> list[uuid.UUID]:
    ids = []
    async with context.database.sessionmaker() as session:
        provider = Provider(name="openai-prod", type="openai")
        session.add(provider)
        await session.flush()
        for index in range(count):
            row_id = uuid.uuid4()
            secret = f"sk-live-{index:04d}-abcdefgh"
            session.add(
                ProviderCredential(
                    id=row_id,
                    provider_id=provider.id,
                    alias=f"key-{index}",
                    api_key_encrypted=context.cipher.encrypt(
                        secret, associated_data(TABLE, "api_key_encrypted", row_id)
                    ),
                    secret_key_encrypted=context.cipher.encrypt(
                        "secret-" + secret, associated_data(TABLE, "secret_key_encrypted", row_id)
                    ),
                    api_key_masked="sk-l...efgh",
                )
            )
            ids.append(row_id)
        await session.commit()
    return ids


async def test_encrypted_columns_are_discovered() -> None:
    names = {(table.name, column.name) for table, column in encrypted_columns(metadata)}
    assert {(TABLE, "api_key_encrypted"), (TABLE, "secret_key_encrypted"), (TABLE, "access_token_encrypted")} <= names


async def test_rotation_rewraps_every_secret_and_retires_the_old_key(context: AppContext) -> None:
    ids = await _seed(context, 5)
    async with context.database.sessionmaker() as session:
        before = {row.id: row for row in await session.scalars(select(ProviderCredential))}
    new_key = os.urandom(32)
    old_key = context.secrets.master_keys["test-1"]
    rotating = EnvelopeCipher({"test-1": old_key, "test-2": new_key}, "test-2")

    report = await rotate_master_key(context.database.engine, rotating, metadata)
    assert report.rewrapped == 10 and not report.failed
    assert dict(report.key_ids_in_use) == {"test-2": 10}

    only_new = EnvelopeCipher({"test-2": new_key}, "test-2")
    async with context.database.sessionmaker() as session:
        after = {row.id: row for row in await session.scalars(select(ProviderCredential))}
    for index, row_id in enumerate(ids):
        row = after[row_id]
        assert Envelope.parse(row.api_key_encrypted).key_id == "test-2"
        assert Envelope.parse(row.api_key_encrypted).sealed == Envelope.parse(before[row_id].api_key_encrypted).sealed
        aad = associated_data(TABLE, "api_key_encrypted", row_id)
        assert only_new.decrypt(row.api_key_encrypted, aad) == f"sk-live-{index:04d}-abcdefgh"

    again = await rotate_master_key(context.database.engine, rotating, metadata)
    assert again.rewrapped == 0 and again.already_current == 10


async def test_rotation_reports_unreadable_rows_and_leaves_them_alone(context: AppContext) -> None:
    ids = await _seed(context, 2)
    async with context.database.sessionmaker() as session:
        first, second = (await session.get(ProviderCredential, ids[0])), (await session.get(ProviderCredential, ids[1]))
        assert first and second
        swapped = second.api_key_encrypted
        await session.execute(
            update(ProviderCredential).where(ProviderCredential.id == ids[0]).values(api_key_encrypted=swapped)
        )
        await session.commit()

    rotating = EnvelopeCipher({"test-1": context.secrets.master_keys["test-1"], "test-2": os.urandom(32)}, "test-2")
    report = await rotate_master_key(context.database.engine, rotating, metadata)
    assert len(report.failed) == 1 and str(ids[0]) in report.failed[0]
    assert report.key_ids_in_use["test-1"] == 1
    async with context.database.sessionmaker() as session:
        untouched = await session.get(ProviderCredential, ids[0])
        assert untouched is not None and untouched.api_key_encrypted == swapped
