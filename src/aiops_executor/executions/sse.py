"""One execution's events as a Server-Sent Events stream that survives reconnects.

Hand-over: subscribe to live events first, then replay the store after ``Last-Event-ID``, then live events,
skipping any ``seq`` already sent. No loss: only committed events are published, so an event is either
committed before the replay reads the store (replayed) or published after the subscription began (queued).
No repetition: ``seq`` increases along both sources and anything at or below the last one sent is dropped.
No gap: a live event beyond the next ``seq`` sends the stream back to the store, which holds everything
committed (a live source may miss an event: Redis, when a crash cut its publication off).

Token deltas (``StreamEvent.live``) exist only on the live path: one is sent when it follows the last event sent
(its ``seq`` is that event's), dropped otherwise; a client that re-attaches gets the complete ``agent_message``.

With no live channel here (the run finished, runs in another process, or has not resumed yet) the stream
follows the store until the terminal event. When the process stops (``Broadcaster.shutdown``, or uvicorn's
shutdown as seen by sse-starlette) the stream ends with a ``retry:`` hint so that clients re-attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from aiops_executor.core.context import AppContext
from aiops_executor.engine.events import EventType, format_timestamp
from aiops_executor.executions.broadcast import Broadcaster, StreamEvent, Subscription
from aiops_executor.executions.event_log import replay
from aiops_executor.executions.models import Execution
from aiops_executor.executions.schemas import UNFINISHED

STORE_POLL_SECONDS = 0.5
# Sent when the server stops: how long clients wait before re-attaching (milliseconds).
RECONNECT_MS = 1000
# How long sse-starlette lets a stream say goodbye on server shutdown before cancelling it.
SHUTDOWN_GRACE_SECONDS = 5.0


def sse_message(event: StreamEvent) -> bytes:
    """The message, encoded once per event whatever the number of streams sending it."""
    return event.sse


def restarting_message() -> ServerSentEvent:
    """A comment and a ``retry:`` field, no event: the client reconnects (with Last-Event-ID) after it."""
    return ServerSentEvent(comment="server restarting; reconnect with Last-Event-ID", retry=RECONNECT_MS)


def _heartbeat(execution: Execution, last_seq: int) -> ServerSentEvent:
    payload = {
        "execution_id": str(execution.id),
        "team_id": str(execution.team_id),
        "seq": last_seq,
        "timestamp": format_timestamp(datetime.now(UTC)),
    }
    # No id: a heartbeat must not move the client's Last-Event-ID.
    return ServerSentEvent(json.dumps(payload), event=EventType.heartbeat.value)


async def _finished(context: AppContext, execution_id: uuid.UUID) -> bool:
    async with context.database.sessionmaker() as session:
        row = await session.get(Execution, execution_id)
        return row is None or row.status not in UNFINISHED


class _Follower:
    """The stream's current subscription, replaced when a run turns up live here, and its stop request."""

    def __init__(self, broadcaster: Broadcaster, key: str, after: int) -> None:
        self.broadcaster = broadcaster
        self.key = key
        self.stopping = False
        self.subscription: Subscription = broadcaster.subscribe(key, after)

    @property
    def interrupted(self) -> bool:
        return self.stopping or self.subscription.interrupted

    def resubscribe(self, after: int) -> None:
        self.subscription.close()
        self.subscription = self.broadcaster.subscribe(self.key, after)
        if self.stopping:
            self.subscription.interrupt()

    def stop(self) -> None:
        self.stopping = True
        self.subscription.interrupt()

    async def stop_when(self, event: anyio.Event) -> None:
        await event.wait()
        self.stop()


async def execution_stream(
    context: AppContext,
    broadcaster: Broadcaster,
    execution: Execution,
    after: int,
    *,
    stopping: anyio.Event | None = None,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The stream's messages. ``stopping``, when set, ends it like ``Broadcaster.shutdown`` does."""
    settings = context.settings
    sessionmaker = context.database.sessionmaker
    loop = asyncio.get_running_loop()
    follower = _Follower(broadcaster, str(execution.id), after)  # before reading the store: see the module doc
    watcher = asyncio.create_task(follower.stop_when(stopping)) if stopping is not None else None
    last = after
    # last_event: when an event was last sent (idle close); last_sent: when anything was (heartbeat).
    last_event = last_sent = loop.time()
    read_store = True
    try:
        while True:
            if follower.interrupted:
                yield restarting_message()
                return
            subscription = follower.subscription
            if subscription.closed:
                # Not live here: whatever exists is in the store. The run may have turned up live here since
                # the last look; subscribing again (before reading the store) picks it up.
                follower.resubscribe(last)
                subscription = follower.subscription
                read_store = True
            if read_store:
                read_store = False
                # The status is read before the events: a run that had finished then has its terminal event
                # in the store (both are written in one transaction).
                finished = subscription.closed and await _finished(context, execution.id)
                async for event in replay(sessionmaker, execution.id, last):
                    if follower.interrupted:
                        break
                    yield sse_message(event)
                    last, last_event = event.seq, loop.time()
                    last_sent = last_event
                    if event.is_terminal:
                        return
                if follower.interrupted:
                    continue
                if finished:
                    return
            now = loop.time()
            if now - last_event >= settings.sse_idle_close_seconds:
                return
            if now - last_sent >= settings.sse_heartbeat_seconds:
                yield _heartbeat(execution, last)
                last_sent = now
            wait = min(last_sent + settings.sse_heartbeat_seconds, last_event + settings.sse_idle_close_seconds)
            wait = max(0.0, wait - now)
            if subscription.closed:
                wait = min(wait, STORE_POLL_SECONDS)  # polling the store; an interruption ends the wait
            live = await subscription.next(wait)
            if live is None:
                continue
            if live.live:
                if live.seq == last:  # it follows what this stream sent; otherwise it is stale or early
                    yield sse_message(live)
                    last_event = last_sent = loop.time()
                elif live.seq > last:
                    read_store = True  # stored events came before it that this stream has not sent
                continue
            if live.seq <= last:
                continue
            if live.seq > last + 1:
                # Events in between never came live (a publication cut off by a crash, a trimmed Redis stream):
                # they are committed, so the store has them, this one included.
                read_store = True
                continue
            yield sse_message(live)
            last, last_event = live.seq, loop.time()
            last_sent = last_event
            if live.is_terminal:
                return
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        follower.subscription.close()


def execution_stream_response(
    context: AppContext,
    broadcaster: Broadcaster,
    execution: Execution,
    after: int,
    *,
    headers: Mapping[str, str] | None = None,
    ping: float | None = None,
) -> EventSourceResponse:
    """The SSE response for ``execution_stream``, ending it with the ``retry:`` hint on server shutdown.

    sse-starlette notices uvicorn's shutdown itself (it watches ``should_exit``) and would cancel the stream
    at once; with ``shutdown_event`` and a grace period it lets the stream send its goodbye first.
    """
    stopping = anyio.Event()
    return EventSourceResponse(
        execution_stream(context, broadcaster, execution, after, stopping=stopping),
        headers=headers,
        ping=ping,
        shutdown_event=stopping,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )
