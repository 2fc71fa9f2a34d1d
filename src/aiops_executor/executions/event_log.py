"""The persisted event log: a group-committing, in-order writer per run, and paged reads.

An event reaches live subscribers only once it is committed: ``EventRecorder.add`` queues it and wakes one
background flusher, which waits a short group-commit window, writes everything queued in one transaction
(rows and ``executions.last_seq``) and then publishes those events, in ``seq`` order. A failed write keeps
its events for the next attempt; nothing unstored is ever published, so a crash cannot take back an event a
client has seen. The run's last events are written in the same transaction as its final state.

Live events (token deltas) are never written: one is published at once when nothing stored waits before it,
otherwise right after the stored events it follows, so that subscribers see every event in the run's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.engine.events import ExecutionEvent
from aiops_executor.executions import repository
from aiops_executor.executions.broadcast import Broadcaster, StreamEvent
from aiops_executor.executions.models import ExecutionEventRow

logger = structlog.get_logger(__name__)

EVENTS_TABLE = cast(Table, ExecutionEventRow.__table__)

REPLAY_PAGE = 500
# Pauses between attempts at a failed write (the last one repeats).
RETRY_DELAYS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
# How long writes are retried, from the first failure of a streak, before the recorder gives up.
RETRY_FOR_SECONDS = 30.0

FinalWrite = Callable[[AsyncSession], Awaitable[None]]
# ``async_sessionmaker[AsyncSession]`` or anything that makes sessions the same way.
SessionFactory = Callable[[], AsyncSession]


class EventStoreUnavailable(RuntimeError):
    """Events could not be written for longer than the recorder retries; they were not published."""


def stream_event(event: ExecutionEvent) -> StreamEvent:
    return StreamEvent(event.seq, event.type.value, event.payload(), live=event.is_live)


@dataclass(frozen=True)
class _Queued:
    row: dict[str, Any] | None  # None: a live event, published in its turn and never written
    event: StreamEvent


def _queued(execution_id: uuid.UUID, event: ExecutionEvent) -> _Queued:
    streamed = stream_event(event)
    if event.is_live:
        return _Queued(None, streamed)
    row = {
        "execution_id": execution_id,
        "seq": event.seq,
        "type": event.type.value,
        "node_id": event.node_id,
        "agent_id": event.agent_id,
        "supervisor_id": event.supervisor_id,
        "payload": streamed.payload,
        "timestamp": event.timestamp,
        "created_at": event.timestamp,
        "updated_at": event.timestamp,
    }
    return _Queued(row, streamed)


class EventRecorder:
    """Stores, then publishes, one run's events in order; ``close`` writes the rest with the final state.

    ``add`` returns at once in the common case; once ``batch_size`` events are queued it waits for a write
    to make room (backpressure, e.g. while the database is down). ``flush_interval`` is the group-commit
    window: how long the flusher waits after an event arrives for others to share its transaction (events
    queued during a write go in the next one without a new window). A failed write is retried after
    ``retry_delays``; after ``retry_for`` seconds of failures ``add`` and ``close`` raise
    ``EventStoreUnavailable`` (at once, from ``repository.LeaseLost``, when ``owner`` lost the run).
    """

    def __init__(
        self,
        sessionmaker: SessionFactory,
        broadcaster: Broadcaster,
        execution_id: uuid.UUID,
        *,
        flush_interval: float,
        batch_size: int,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        retry_for: float = RETRY_FOR_SECONDS,
        owner: str | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.broadcaster = broadcaster
        self.execution_id = execution_id
        self.flush_interval = flush_interval
        self.batch_size = max(1, batch_size)
        self.retry_delays = tuple(retry_delays) or (0.0,)
        self.retry_for = retry_for
        self.owner = owner  # the worker running the attempt: its writes stop once another one took over
        self._key = str(execution_id)
        self._queue: list[_Queued] = []
        self._stored_queued = 0  # how many of ``_queue`` are stored events (the rest are live)
        # A terminal event waits for ``close``: it is stored with the run's final state and announced last.
        self._terminal: _Queued | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something is queued
        self._urgent = asyncio.Event()  # write now, without waiting out the window
        self._progress = asyncio.Event()  # replaced after each write (or failure) to wake waiters
        self._published = 0  # highest seq published
        self._closing = False
        self._closed = False
        self._failing_since: float | None = None
        self._attempts = 0  # failed attempts in the current streak
        self._uncertain = False  # a failed attempt may have committed: check what is stored before writing
        self._error: BaseException | None = None  # the write failure that made the recorder give up

    # -- producing -----------------------------------------------------------------------------------

    async def add(self, event: ExecutionEvent) -> None:
        if self._closing:
            raise RuntimeError("the event recorder is closed")
        if self._error is not None:
            raise EventStoreUnavailable("events cannot be stored") from self._error
        queued = _queued(self.execution_id, event)
        if event.is_live:
            if self._queue:
                self._queue.append(queued)  # after the stored events it follows
            else:
                self.broadcaster.publish(self._key, queued.event)
            return
        if event.is_terminal:
            self._terminal = queued
            return
        self._queue.append(queued)
        self._stored_queued += 1
        self._start()
        self._wake.set()
        if self._stored_queued >= self.batch_size:
            self._urgent.set()
            while self._stored_queued >= self.batch_size:
                await self._wait_for_progress()

    async def flush(self) -> None:
        """Waits until every event added so far (a terminal one aside) is stored and published."""
        if not self._queue:
            return
        target = self._queue[-1].event.seq
        self._urgent.set()
        self._wake.set()
        while self._published < target:
            await self._wait_for_progress()

    async def _wait_for_progress(self) -> None:
        if self._error is not None:
            raise EventStoreUnavailable("events cannot be stored") from self._error
        if self._flusher is None or self._flusher.done():
            raise RuntimeError("the event recorder is not writing")
        progress = self._progress
        await progress.wait()
        if self._error is not None:
            raise EventStoreUnavailable("events cannot be stored") from self._error

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"event-flusher-{self._key}")

    # -- writing -------------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await self._wake.wait()
            if self._closing:
                return
            if not self._urgent.is_set() and self.flush_interval > 0:
                # The group-commit window: events queued meanwhile share the transaction.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.flush_interval):
                        await self._urgent.wait()
            if self._closing:
                return
            self._wake.clear()
            self._urgent.clear()
            count = len(self._queue)
            if count == 0:
                continue
            try:
                await self._write(self._queue[:count], None)
            except Exception as exc:
                if not self._retrying(exc, loop.time()):
                    self._signal_progress()
                    return
                self._signal_progress()
                await self._pause()
                self._wake.set()
                self._urgent.set()  # the events have waited long enough: no new window
                continue
            self._commit_done(count)
            if self._queue:
                # Queued during the write: they have waited long enough, write them without a new window.
                self._wake.set()
                self._urgent.set()

    def _retrying(self, exc: Exception, now: float) -> bool:
        """Notes a failed write; False once failures have lasted longer than ``retry_for`` (at once when the run
        was taken over: retrying cannot help)."""
        if isinstance(exc, repository.LeaseLost):
            self._error = exc
            logger.warning("execution taken over by another worker; this attempt stops", execution_id=self._key)
            return False
        self._uncertain = True
        if self._failing_since is None:
            self._failing_since = now
        failing_for = now - self._failing_since
        logger.warning(
            "could not store execution events; will retry",
            execution_id=self._key,
            error=f"{type(exc).__name__}: {exc}",
            queued=len(self._queue),
            failing_for_s=round(failing_for, 3),
        )
        if failing_for >= self.retry_for:
            self._error = exc
            logger.error("gave up storing execution events", execution_id=self._key, queued=len(self._queue))
            return False
        return True

    async def _pause(self) -> None:
        """Waits before the next attempt; ``close`` cuts the pause short (it takes over the writing)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._next_delay()):
                while not self._closing:
                    await self._urgent.wait()
                    self._urgent.clear()

    def _next_delay(self) -> float:
        delay = self.retry_delays[min(self._attempts, len(self.retry_delays) - 1)]
        self._attempts += 1
        return delay

    def _commit_done(self, count: int) -> None:
        batch = self._queue[:count]
        del self._queue[:count]
        # Live events queued behind the batch have nothing stored before them any more: they go out with it.
        while self._queue and self._queue[0].row is None:
            batch.append(self._queue.pop(0))
        self._stored_queued = sum(1 for queued in self._queue if queued.row is not None)
        self._failing_since = None
        self._attempts = 0
        self._uncertain = False
        for queued in batch:
            self.broadcaster.publish(self._key, queued.event)
        if batch:
            self._published = batch[-1].event.seq
        self._signal_progress()

    async def _write(self, batch: list[_Queued], final: FinalWrite | None) -> None:
        """One transaction: the rows not yet stored, ``executions.last_seq`` and the final state."""
        async with self.sessionmaker() as session, session.begin():
            rows = [q.row for q in batch if q.row is not None]
            if rows and self._uncertain:
                # The previous attempt failed, perhaps after its commit went through: skip what is stored.
                stored = await stored_last_seq(session, self.execution_id)
                rows = [row for row in rows if row["seq"] > stored]
            if rows:
                # Core, not the ORM's bulk insert: that one splits a batch by which columns are null (one
                # statement per shape); every row here has every column, so the batch is one executemany.
                await session.execute(insert(EVENTS_TABLE), rows)
            if batch:
                await repository.record_last_seq(session, self.execution_id, batch[-1].event.seq, self.owner)
            if final is not None:
                await final(session)

    # -- closing -------------------------------------------------------------------------------------

    async def close(self, final: FinalWrite) -> None:
        """Writes the remaining events with the run's final state in one transaction, publishes them
        (the terminal event last), then ends live delivery.

        Raises ``EventStoreUnavailable`` when the database stayed unavailable for ``retry_for``; the
        events that could not be written are not published (subscribers fall back to the store).
        """
        if self._closed:
            return
        self._closing = True
        try:
            if self._flusher is not None:
                # Never cancelled mid-write: a commit whose events were not published would be lost to
                # live subscribers. The flusher stops after its current attempt.
                self._urgent.set()
                self._wake.set()
                await asyncio.shield(self._flusher)
            loop = asyncio.get_running_loop()
            batch = sorted(self._queue + ([self._terminal] if self._terminal else []), key=lambda q: q.event.seq)
            while True:
                try:
                    await self._write(batch, final)
                    break
                except Exception as exc:
                    if not self._retrying(exc, loop.time()):
                        raise EventStoreUnavailable(
                            f"could not store {len(batch)} execution events and the run's final state"
                        ) from exc
                    await asyncio.sleep(self._next_delay())
            self._queue.clear()
            self._stored_queued = 0
            self._terminal = None
            self._failing_since = None
            self._closed = True
            for queued in batch:
                self.broadcaster.publish(self._key, queued.event)
            if batch:
                self._published = batch[-1].event.seq
        finally:
            self._signal_progress()
            self.broadcaster.finish(self._key)


async def stored_last_seq(session: AsyncSession, execution_id: uuid.UUID) -> int:
    """The highest ``seq`` stored for the execution, 0 when it has no event."""
    value = await session.scalar(
        select(func.max(ExecutionEventRow.seq)).where(ExecutionEventRow.execution_id == execution_id)
    )
    return int(value or 0)


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


async def replay(sessionmaker: SessionFactory, execution_id: uuid.UUID, after: int) -> AsyncIterator[StreamEvent]:
    """Every stored event after ``after``, in order, a page at a time (short transactions)."""
    while True:
        async with sessionmaker() as session:
            rows = await events_after(session, execution_id, after, REPLAY_PAGE)
        for row in rows:
            yield StreamEvent(row.seq, row.type, row.payload)
            after = row.seq
        if len(rows) < REPLAY_PAGE:
            return
