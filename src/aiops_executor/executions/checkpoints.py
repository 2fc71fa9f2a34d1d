"""Where runs keep their LangGraph checkpoints: PostgreSQL when the database is PostgreSQL, SQLite otherwise.

On PostgreSQL the checkpointer works on its own psycopg pool (autocommit, dict rows, no prepared statements
so PgBouncer in transaction mode works, no pipeline); its tables are created by ``migrate``. On the embedded
default the checkpoints live in a SQLite file beside the database file (its own write lock, so checkpoint
writes and event writes do not queue behind each other), created on first use with owner-only permissions.
The thread of a run is its execution id; purging an execution deletes its thread.

Group commit: in ``sync`` durability every finished step of every node team waits for its checkpoint, and
100 node teams finish steps all the time. The savers here queue the statements of concurrent saves and write
them in one transaction; each save still returns only once its rows are committed, so nothing a step reports
as saved can be lost, while a run of many node teams pays one commit per batch instead of one per step.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from aiops_executor.core.private_apis.savers import SQLITE_SAVER_COLUMNS

POOL_MAX_SIZE = 10
# How the checkpointer's connections show in pg_stat_activity.
APPLICATION_NAME = "aiops-checkpoints"


logger = structlog.get_logger(__name__)

Statement = tuple[str, list[tuple[Any, ...]]]  # SQL and the rows to execute it with (executemany)


class GroupCommit:
    """Executes the statements of concurrent saves together, in one transaction per batch.

    ``run`` returns once the batch holding its statements is committed (or raises what the batch raised). A
    batch takes everything queued while the previous one was being written, so the batches grow with load.
    """

    def __init__(self, write: Callable[[list[Statement]], Awaitable[None]]) -> None:
        self._write = write
        self._queued: list[tuple[list[Statement], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, statements: list[Statement]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((statements, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="checkpoint-group-commit")
        await done

    async def _write_queued(self) -> None:
        await asyncio.sleep(0)  # saves finishing in this turn of the event loop join the first batch
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._write(_merged([statement for statements, _ in batch for statement in statements]))
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():  # a caller cancelled meanwhile (its rows are stored anyway)
                        done.set_result(None)

    async def drain(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


def _merged(statements: list[Statement]) -> list[Statement]:
    """Consecutive statements with the same SQL become one ``executemany`` (order is kept)."""
    merged: list[Statement] = []
    for sql, rows in statements:
        if merged and merged[-1][0] == sql:
            merged[-1][1].extend(rows)
        else:
            merged.append((sql, list(rows)))
    return merged


class GroupCommitPostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` whose writes (checkpoints, task writes, deletions) go through a ``GroupCommit``.

    The saver builds its statements on a cursor it asks ``_cursor(pipeline=True)`` for (a private hook:
    core/private_apis, item 4); here that cursor only records them, and leaving it hands them to the group
    commit. Reads use real cursors, as before.
    """

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__(pool)
        self.pool = pool
        self.group = GroupCommit(self._write_batch)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
        if not pipeline:
            async with super()._cursor() as cursor:
                yield cursor
            return
        recorder = _RecordingCursor()
        yield recorder
        await self.group.run(recorder.statements)

    async def _write_batch(self, statements: list[Statement]) -> None:
        try:
            await self._write_once(statements)
        except psycopg.OperationalError as exc:
            # The connection was cut while the batch was written (it passed its check as it was handed out).
            # Once more on a new connection is safe whether the cut came before the commit or after it: the
            # saver's statements are upserts.
            logger.warning("a checkpoint write lost its connection; writing it again", error=str(exc))
            await self._write_once(statements)

    async def _write_once(self, statements: list[Statement]) -> None:
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=True) as cursor:
            for sql, rows in statements:
                await cursor.executemany(sql, rows)


class _RecordingCursor:
    def __init__(self) -> None:
        self.statements: list[Statement] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append((sql, [tuple(params)]))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.statements.append((sql, [tuple(row) for row in rows]))


def _sqlite_insert(verb: str, table: str) -> str:
    columns = SQLITE_SAVER_COLUMNS[table]
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_SQLITE_CHECKPOINT = _sqlite_insert("INSERT OR REPLACE", "checkpoints")


class GroupCommitSqliteSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` whose checkpoint and task writes go through a ``GroupCommit`` (reads unchanged); it
    writes the saver's own tables (core/private_apis, item 5)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn)
        self.group = GroupCommit(self._write_batch)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        await self.setup()
        configurable = config["configurable"]
        thread_id, namespace = str(configurable["thread_id"]), configurable["checkpoint_ns"]
        kind, body = self.serde.dumps_typed(checkpoint)
        described = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False).encode()
        row = (thread_id, namespace, checkpoint["id"], configurable.get("checkpoint_id"), kind, body, described)
        await self.group.run([(_SQLITE_CHECKPOINT, [row])])
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": namespace, "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        configurable = config["configurable"]
        # Special channels (errors, interrupts, ...) have fixed slots and replace; ordinary writes never do.
        verb = "INSERT OR REPLACE" if all(channel in WRITES_IDX_MAP for channel, _ in writes) else "INSERT OR IGNORE"
        key = (str(configurable["thread_id"]), str(configurable["checkpoint_ns"]), str(configurable["checkpoint_id"]))
        rows = [
            (*key, task_id, task_path, WRITES_IDX_MAP.get(channel, index), channel, *self.serde.dumps_typed(value))
            for index, (channel, value) in enumerate(writes)
        ]
        await self.setup()
        await self.group.run([(_sqlite_insert(verb, "writes"), rows)])

    async def _write_batch(self, statements: list[Statement]) -> None:
        async with self.lock:
            try:
                for sql, rows in statements:
                    await self.conn.executemany(sql, rows)
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise


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
                kwargs={
                    "autocommit": True,
                    "row_factory": dict_row,
                    "prepare_threshold": None,
                    "application_name": APPLICATION_NAME,
                },
                # Proxies and cloud databases cut connections left idle during long model calls: each one is
                # checked as it is handed out, and a dead one replaced, so that the next save does not fail.
                check=AsyncConnectionPool.check_connection,
                open=False,
            )
            await self._pool.open(wait=True)
            self._saver = GroupCommitPostgresSaver(self._pool)
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
            saver = GroupCommitSqliteSaver(self._sqlite)
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
        if isinstance(self._saver, GroupCommitPostgresSaver | GroupCommitSqliteSaver):
            await self._saver.group.drain()
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
