"""Where runs keep their LangGraph checkpoints: PostgreSQL when the database is PostgreSQL, SQLite otherwise.

On PostgreSQL the checkpointer works on its own psycopg pool (autocommit, dict rows, no prepared statements
so PgBouncer in transaction mode works, no pipeline); its tables are created by ``migrate``. On the embedded
default the checkpoints live in a SQLite file beside the database file (its own write lock, so checkpoint
writes and event writes do not queue behind each other), created on first use with owner-only permissions.
The thread of a run is its execution id; purging an execution deletes its thread.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

POOL_MAX_SIZE = 10
# Owned and versioned by the PostgreSQL checkpointer's own setup (run by ``migrate``), not by Alembic.
CHECKPOINTER_TABLES = frozenset({"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"})


def is_service_schema(name: str | None, type_: str, *_: object) -> bool:
    """Alembic's ``include_name``: everything but the checkpointer's tables (and their indexes)."""
    return not (type_ == "table" and name in CHECKPOINTER_TABLES)


def sqlite_checkpoint_path(database_url: str) -> Path:
    """``aiops.db`` keeps its checkpoints in ``aiops.checkpoints.db`` next to it."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise ValueError("durable runs need a SQLite database file, not an in-memory database")
    path = Path(database)
    return path.with_name(f"{path.stem}.checkpoints{path.suffix or '.db'}")


def postgres_conninfo(database_url: str) -> str:
    """The psycopg connection string for the service's SQLAlchemy URL (``postgresql+asyncpg://...``)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Checkpoints:
    """The process's checkpointer. ``open`` before use, ``close`` at shutdown."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.is_postgres = make_url(database_url).get_backend_name() == "postgresql"
        self._saver: BaseCheckpointSaver[Any] | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._sqlite: aiosqlite.Connection | None = None

    @property
    def saver(self) -> BaseCheckpointSaver[Any]:
        if self._saver is None:
            raise RuntimeError("the checkpointer is not open")
        return self._saver

    async def open(self) -> BaseCheckpointSaver[Any]:
        if self._saver is not None:
            return self._saver
        if self.is_postgres:
            self._pool = AsyncConnectionPool(
                postgres_conninfo(self.database_url),
                min_size=1,
                max_size=POOL_MAX_SIZE,
                kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": None},
                open=False,
            )
            await self._pool.open(wait=True)
            self._saver = AsyncPostgresSaver(self._pool)
        else:
            path = sqlite_checkpoint_path(self.database_url)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
            os.chmod(path, 0o600)
            self._sqlite = await aiosqlite.connect(path)
            await self._sqlite.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL keeps every commit across a crash of the process (kill -9), which is what a
            # checkpoint must survive; it only skips the fsync per commit that guards against power loss.
            await self._sqlite.execute("PRAGMA synchronous=NORMAL")
            await self._sqlite.execute("PRAGMA busy_timeout=30000")
            saver = AsyncSqliteSaver(self._sqlite)
            await saver.setup()
            self._saver = saver
        return self._saver

    async def setup(self) -> None:
        """Creates or upgrades the checkpointer's tables (its own migrations; idempotent)."""
        saver = await self.open()
        if isinstance(saver, AsyncPostgresSaver | AsyncSqliteSaver):
            await saver.setup()

    async def delete(self, execution_ids: Iterable[uuid.UUID]) -> None:
        saver = await self.open()
        for execution_id in execution_ids:
            await saver.adelete_thread(str(execution_id))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._sqlite is not None:
            await self._sqlite.close()
        self._saver = self._pool = self._sqlite = None


async def setup_checkpoints(database_url: str) -> None:
    """Part of ``migrate``: the checkpointer's tables, next to the Alembic-managed schema."""
    checkpoints = Checkpoints(database_url)
    try:
        await checkpoints.setup()
    finally:
        await checkpoints.close()
