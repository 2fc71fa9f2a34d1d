"""The schema, as the migrations create it, on SQLite and PostgreSQL: it matches the models exactly, the
database itself enforces the uniqueness rules (not only the services' pre-checks), keys are UUIDs and
timestamps are timezone-aware."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from aiops_executor.core.migrate import current_revision, downgrade_engine, head_revision, upgrade_engine
from aiops_executor.llm.models import LLMModel, Provider, ProviderCredential, ProviderEndpoint
from aiops_executor.models_registry import is_service_schema, metadata
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _pg_admin

CONFIGURATION_TABLES = (
    "providers",
    "provider_endpoints",
    "provider_credentials",
    "llm_models",
    "users",
    "api_keys",
    "audit_logs",
)


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(database_url)
    async with AsyncSession(engine, expire_on_commit=False) as db_session:
        yield db_session
    await engine.dispose()


def _diff(connection: Connection) -> list[Any]:
    # The checkpointer's tables (PostgreSQL) are created by its own setup in ``migrate``, not by Alembic.
    context = MigrationContext.configure(connection, opts={"include_name": is_service_schema})
    return list(compare_metadata(context, metadata))


async def test_migrations_create_exactly_the_models_schema(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def _provider(session: AsyncSession, name: str = "p", **values: Any) -> Provider:
    provider = Provider(name=name, type="openai", **values)
    session.add(provider)
    await session.commit()
    return provider


async def _refused(session: AsyncSession, row: object) -> None:
    session.add(row)
    with pytest.raises(IntegrityError):
        await session.commit()
    await session.rollback()


async def test_provider_names_are_unique_among_live_rows_in_the_database(session: AsyncSession) -> None:
    first = await _provider(session, "shared")
    await _refused(session, Provider(name="shared", type="anthropic"))
    first.deleted_at = datetime.now(UTC)
    await session.commit()
    second = await _provider(session, "shared")  # the name of a soft-deleted provider is free again
    assert second.id != first.id
    second.deleted_at = datetime.now(UTC)
    await session.commit()
    await _provider(session, "shared")  # several deleted rows may share it


async def test_aliases_model_ids_and_endpoint_names_are_unique_per_provider(session: AsyncSession) -> None:
    one, two = (await _provider(session, "one")).id, (await _provider(session, "two")).id

    def credential(provider_id: uuid.UUID) -> ProviderCredential:
        return ProviderCredential(
            provider_id=provider_id, alias="main", api_key_encrypted="v1.k.a.b", api_key_masked="****"
        )

    def model(provider_id: uuid.UUID) -> LLMModel:
        return LLMModel(provider_id=provider_id, model_id="gpt-4o", name="GPT-4o", type="chat")

    def endpoint(provider_id: uuid.UUID) -> ProviderEndpoint:
        return ProviderEndpoint(
            provider_id=provider_id,
            name="primary",
            timeout_connect=1,
            timeout_read=1,
            retry_count=0,
            retry_interval=0,
            priority=1,
        )

    for make in (credential, model, endpoint):
        session.add_all([make(one), make(two)])  # the same value under two providers is fine
        await session.commit()
        await _refused(session, make(one))


async def test_keys_are_uuids_and_timestamps_timezone_aware(session: AsyncSession, backend: str) -> None:
    provider = await _provider(session, "tz")
    assert isinstance(provider.id, uuid.UUID)
    shanghai = datetime(2030, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    provider.deleted_at = shanghai
    await session.commit()
    session.expunge_all()
    stored = await session.get(Provider, provider.id)
    assert stored is not None
    for value in (stored.created_at, stored.updated_at, stored.deleted_at):
        assert value is not None and value.utcoffset() == timedelta(0)
    assert stored.deleted_at == shanghai  # the same instant, reported in UTC
    session.add(Provider(name="naive", type="openai", deleted_at=datetime(2030, 1, 1)))
    with pytest.raises(StatementError, match="naive datetime"):
        await session.commit()
    await session.rollback()

    if backend == "postgresql":
        rows = await session.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            )
        )
        # The tables of the service (the job queue's and the checkpointer's follow their libraries' own designs).
        types = {(table, column): data_type for table, column, data_type in rows if is_service_schema(table, "table")}
        naive = [key for key, data_type in types.items() if data_type == "timestamp without time zone"]
        assert naive == [], "every timestamp column is timezone-aware"
        for table in CONFIGURATION_TABLES:
            assert types[(table, "id")] == "uuid", table
            assert types[(table, "created_at")] == types[(table, "updated_at")] == "timestamp with time zone", table
        other_ids = [key for key, data_type in types.items() if key[1] == "id" and data_type != "uuid"]
        assert other_ids == [], "every id column is a UUID"


@pytest.fixture
async def scratch_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of its own (the shared test databases are already migrated)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
        return
    name = f"aiops_scratch_{uuid.uuid4().hex[:12]}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_migrations_upgrade_downgrade_and_upgrade_again(scratch_url: str) -> None:
    engine = create_async_engine(scratch_url)
    try:
        await upgrade_engine(engine)
        assert await current_revision(engine) == head_revision()
        await downgrade_engine(engine, "base")
        async with engine.connect() as connection:
            left = await connection.run_sync(lambda sync: sync.dialect.get_table_names(sync))
        assert set(left) <= {"alembic_version"}, left
        await upgrade_engine(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
    finally:
        await engine.dispose()
