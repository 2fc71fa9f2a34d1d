"""One execution's events as a Server-Sent Events stream that survives reconnects.

Order of reading: subscribe to live events first, then replay the store after ``Last-Event-ID``, then the
broadcaster's not-yet-persisted tail, then live events; sequence numbers already sent are skipped, so the
hand-over loses nothing and repeats nothing. When no live channel exists here (the run finished, or runs
in another process) the stream follows the store until the execution finishes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from sse_starlette import ServerSentEvent

from aiops_executor.core.context import AppContext
from aiops_executor.engine.events import EventType, format_timestamp
from aiops_executor.executions.broadcast import Broadcaster, StreamEvent
from aiops_executor.executions.models import Execution
from aiops_executor.executions.schemas import UNFINISHED
from aiops_executor.executions.store import replay

STORE_POLL_SECONDS = 0.5


def sse_message(event: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(event.data_json, event=event.type, id=str(event.seq))


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


async def execution_stream(
    context: AppContext, broadcaster: Broadcaster, execution: Execution, after: int
) -> AsyncIterator[ServerSentEvent]:
    settings = context.settings
    subscription = broadcaster.subscribe(str(execution.id))
    last = after
    try:
        async for event in replay(context.database.sessionmaker, execution.id, last):
            yield sse_message(event)
            last = event.seq
            if event.is_terminal:
                return
        for event in subscription.backlog:
            if event.seq > last:
                yield sse_message(event)
                last = event.seq
                if event.is_terminal:
                    return
        # quiet: time without an event (closes the stream); silent: time since anything was sent (heartbeat).
        quiet = silent = 0.0
        while quiet < settings.sse_idle_close_seconds:
            if silent >= settings.sse_heartbeat_seconds:
                yield _heartbeat(execution, last)
                silent = 0.0
            wait = min(settings.sse_heartbeat_seconds - silent, settings.sse_idle_close_seconds - quiet)
            if subscription.closed:
                # Not live here: whatever exists is in the store (the run ended, or another process runs it).
                async for event in replay(context.database.sessionmaker, execution.id, last):
                    yield sse_message(event)
                    last, quiet, silent = event.seq, 0.0, 0.0
                    if event.is_terminal:
                        return
                if await _finished(context, execution.id):
                    return
                wait = min(wait, STORE_POLL_SECONDS)
                await asyncio.sleep(wait)
                quiet, silent = quiet + wait, silent + wait
                continue
            live = await subscription.next(wait)
            if live is None:
                if not subscription.closed:
                    quiet, silent = quiet + wait, silent + wait
                continue
            if live.seq <= last:
                continue
            yield sse_message(live)
            last, quiet, silent = live.seq, 0.0, 0.0
            if live.is_terminal:
                return
    finally:
        subscription.close()
