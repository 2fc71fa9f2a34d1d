"""The persisted event log: a batched, in-order writer per run, and paged reads.

Events are published to live subscribers at once and written in batches (by count or after a short
interval), so a token-heavy run does not cost a transaction per token. The last batch of a run is written
in the same transaction as the run's final state, so the two never disagree.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.engine.events import ExecutionEvent
from aiops_executor.executions.broadcast import Broadcaster, StreamEvent
from aiops_executor.executions.models import Execution, ExecutionEventRow

REPLAY_PAGE = 500

FinalWrite = Callable[[AsyncSession], Awaitable[None]]


def stream_event(event: ExecutionEvent) -> StreamEvent:
    return StreamEvent(event.seq, event.type.value, event.payload())


def _row(execution_id: uuid.UUID, event: ExecutionEvent, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "seq": event.seq,
        "type": event.type.value,
        "node_id": event.node_id,
        "agent_id": event.agent_id,
        "supervisor_id": event.supervisor_id,
        "payload": payload,
        "timestamp": event.timestamp,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
    }


class EventRecorder:
    """Publishes and persists one run's events, in order. ``close`` writes whatever is left."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        broadcaster: Broadcaster,
        execution_id: uuid.UUID,
        *,
        flush_interval: float,
        batch_size: int,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.broadcaster = broadcaster
        self.execution_id = execution_id
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._key = str(execution_id)
        self._pending: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._terminal: StreamEvent | None = None

    async def add(self, event: ExecutionEvent) -> None:
        streamed = stream_event(event)
        self._pending.append(_row(self.execution_id, event, streamed.payload))
        if event.is_terminal:
            # Announced only once the run's final state is stored, so a client that reacts to it by
            # reading the execution sees it finished.
            self._terminal = streamed
            return
        self.broadcaster.publish(self._key, streamed)
        if len(self._pending) >= self.batch_size:
            await self.flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval)
        # Once begun, a write completes even if the timer is cancelled (``close`` waits for it).
        await asyncio.shield(self.flush())

    async def flush(self, final: FinalWrite | None = None) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch and final is None:
                return
            try:
                async with self.sessionmaker() as session, session.begin():
                    if batch:
                        await session.execute(insert(ExecutionEventRow), batch)
                        await session.execute(
                            update(Execution).where(Execution.id == self.execution_id).values(last_seq=batch[-1]["seq"])
                        )
                    if final is not None:
                        await final(session)
            except Exception:
                # Keep the batch for the next attempt: events are never dropped on a failed write.
                self._pending = batch + self._pending
                raise
            if batch:
                self.broadcaster.persisted(self._key, batch[-1]["seq"])

    async def close(self, final: FinalWrite) -> None:
        """Writes the remaining events together with the run's final state, then ends live delivery."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        try:
            await self.flush(final)
            if self._terminal is not None:
                self.broadcaster.publish(self._key, self._terminal)
        finally:
            self.broadcaster.finish(self._key)


async def events_after(
    session: AsyncSession, execution_id: uuid.UUID, after: int, limit: int
) -> list[ExecutionEventRow]:
    rows = await session.scalars(
        select(ExecutionEventRow)
        .where(ExecutionEventRow.execution_id == execution_id, ExecutionEventRow.seq > after)
        .order_by(ExecutionEventRow.seq)
        .limit(limit)
    )
    return list(rows)


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID, after: int
) -> AsyncIterator[StreamEvent]:
    """Every stored event after ``after``, in order, a page at a time (short transactions)."""
    while True:
        async with sessionmaker() as session:
            rows = await events_after(session, execution_id, after, REPLAY_PAGE)
        for row in rows:
            yield StreamEvent(row.seq, row.type, row.payload)
            after = row.seq
        if len(rows) < REPLAY_PAGE:
            return
