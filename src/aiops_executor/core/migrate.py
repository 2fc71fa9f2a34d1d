"""Schema management: Alembic migrations are the only way the schema is created or changed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# How long a start-up check waits for PostgreSQL to accept the connection (asyncpg's default is a minute).
CHECK_CONNECT_TIMEOUT_SECONDS = 10.0


class SchemaNotMigrated(Exception):
    """The database lacks this version's schema: never migrated (``current`` None) or at an older revision."""

    def __init__(self, current: str | None, head: str | None) -> None:
        self.current = current
        self.head = head
        state = "has never been migrated" if current is None else f"is at revision {current}, not {head}"
        super().__init__(f"the database {state}")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))

    def _upgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def downgrade_engine(engine: AsyncEngine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))

    def _downgrade(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_downgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision)


async def upgrade_url(url: str, revision: str = "head") -> None:
    engine = create_async_engine(url)
    try:
        await upgrade_engine(engine, revision)
    finally:
        await engine.dispose()


async def check_migrated(url: str) -> None:
    """Connect and raise ``SchemaNotMigrated`` unless the schema is at the head revision (or at one this code
    does not know: a newer release migrated it, which a rolling upgrade allows)."""
    connect_args = {"timeout": CHECK_CONNECT_TIMEOUT_SECONDS} if url.startswith("postgresql") else {}
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        current = await current_revision(engine)
    finally:
        await engine.dispose()
    head = head_revision()
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if current is None or (current != head and current in known):
        raise SchemaNotMigrated(current, head)
