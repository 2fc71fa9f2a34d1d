"""The ledger's rows of calls no budget is over, written together: a call waits for its own row to be committed
(nothing a caller saw counted goes unrecorded), but the calls settled meanwhile share one transaction and one
INSERT. So a process making many calls at once holds one database connection for them, not one each: under
load, a connection per call exhausted PostgreSQL's connections (``too many clients``) when several processes
ran at once."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.spend.models import ModelCall

# The table, not the ORM entity: one executemany for the batch, whichever of its values are null (the ORM's bulk
# insert would split it by which columns each row leaves null).
MODEL_CALLS = cast(Table, ModelCall.__table__)


class BatchWriter:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(self, row: dict[str, Any]) -> None:
        """Returns once ``row`` is committed (with the others pending meanwhile); raises what the write raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="model-call-ledger")
        await done

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self.sessionmaker() as session:
                    await session.execute(insert(MODEL_CALLS), [row for row, _ in batch])
                    await session.commit()
            except Exception as exc:  # every caller of the batch hears it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
