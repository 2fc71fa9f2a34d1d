"""Live events across processes: one Redis Stream per execution, whose entry ids are the events' ``seq``.

A worker publishes each event once it is committed (``store.EventRecorder``), as entry ``<seq>-0`` of
``aiops:execution:<id>:events``, and each live event (a token delta, never stored) as ``<seq>-<n>``, ``seq``
being the stored event's it follows, so that the stream keeps the run's order. Every API process reads the
streams its SSE clients follow, one reader per execution per process, and fans the events out to its
subscribers. Because entry ids are ``seq``, a reader starts exactly after a client's ``Last-Event-ID`` (live
events after that event included), a run resumed on another worker continues the same stream, and a
re-published event (after a crash) is refused by Redis as a duplicate.

Redis is a fast path, never the record: the store is. A subscriber that sees a ``seq`` jump (an event whose
publication a crash cut off, a trimmed stream) fills the gap from the store (``sse``); while Redis cannot be
read, subscriptions report ``closed`` and streams follow the store instead. Streams are trimmed to
``MAX_ENTRIES`` and expire ``FINISHED_TTL_SECONDS`` after their terminal event (``IDLE_TTL_SECONDS`` after
the last event otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as redis
import structlog

from aiops_executor.executions.broadcast import MAX_PENDING_EVENTS, Mailbox, StreamEvent

logger = structlog.get_logger(__name__)

KEY_PREFIX = "aiops:execution:"
MAX_ENTRIES = 10_000
FINISHED_TTL_SECONDS = 600
IDLE_TTL_SECONDS = 24 * 3600
READ_BLOCK_MS = 5_000
READ_COUNT = 500
PUBLISH_BATCH = 500
RETRY_SECONDS = 1.0
# Events waiting to be published when Redis is slow or down; beyond it new ones are dropped (streams then
# find the gap and read the store) rather than grow this process's memory.
MAX_OUTBOX = 100_000
CONNECT_TIMEOUT_SECONDS = 2.0
# Longer than a blocking read, so that only a Redis that stopped answering times out.
SOCKET_TIMEOUT_SECONDS = READ_BLOCK_MS / 1000 + 5.0


def stream_key(execution_id: str) -> str:
    return f"{KEY_PREFIX}{execution_id}:events"


def _decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> StreamEvent:
    seq, _, part = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return StreamEvent(int(seq), fields[b"type"].decode(), json.loads(fields[b"data"]), live=part not in ("", "0"))


@dataclass(eq=False)
class _RedisSubscription:
    owner: RedisBroadcaster
    key: str
    mailbox: Mailbox
    _closed: bool = False

    async def next(self, wait_seconds: float) -> StreamEvent | None:
        return await self.mailbox.next(wait_seconds)

    @property
    def closed(self) -> bool:
        return self._closed or self.mailbox.interrupted or not self.owner.readable(self.key)

    @property
    def interrupted(self) -> bool:
        return self.mailbox.interrupted

    def interrupt(self) -> None:
        self.mailbox.interrupt()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.owner._unsubscribe(self)


@dataclass(eq=False)
class _Reader:
    task: asyncio.Task[None] | None = None
    subscribers: set[_RedisSubscription] = field(default_factory=set)
    healthy: bool = True


class RedisBroadcaster:
    """``Broadcaster`` over Redis Streams, shared by every process of a deployment."""

    def __init__(self, url: str, *, max_pending: int = MAX_PENDING_EVENTS) -> None:
        self.max_pending = max_pending
        self.redis = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=SOCKET_TIMEOUT_SECONDS
        )
        self._dropping = False
        self._outbox: asyncio.Queue[tuple[str, str, StreamEvent]] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None
        self._readers: dict[str, _Reader] = {}
        # Per run publishing here: the stored seq its latest live event followed, and that event's number.
        self._live_ids: dict[str, tuple[int, int]] = {}
        self._stopping = False

    # -- publishing ----------------------------------------------------------------------------------

    def open(self, execution_id: str) -> None:
        """Nothing to prepare: the stream exists from its first entry."""

    def publish(self, execution_id: str, event: StreamEvent) -> None:
        if self._outbox.qsize() >= MAX_OUTBOX:
            if not self._dropping:
                logger.warning("Redis is not keeping up; live events are dropped, streams read the store")
            self._dropping = True
            return
        self._dropping = False
        if event.live:
            seq, number = self._live_ids.get(execution_id, (event.seq, 0))
            number = number + 1 if seq == event.seq else 1
            self._live_ids[execution_id] = (event.seq, number)
            entry_id = f"{event.seq}-{number}"
        else:
            entry_id = f"{event.seq}-0"
        self._outbox.put_nowait((execution_id, entry_id, event))
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_queued(), name="redis-publisher")

    def finish(self, execution_id: str) -> None:
        """Nothing to end: subscribers stop at the terminal event, and a suspended run goes on elsewhere."""
        self._live_ids.pop(execution_id, None)

    async def _publish_queued(self) -> None:
        while not self._outbox.empty():
            batch = [self._outbox.get_nowait() for _ in range(min(PUBLISH_BATCH, self._outbox.qsize()))]
            pipe = self.redis.pipeline(transaction=False)
            for execution_id, entry_id, event in batch:
                key = stream_key(execution_id)
                pipe.xadd(
                    key,
                    {"type": event.type, "data": event.data_json},
                    id=entry_id,
                    maxlen=MAX_ENTRIES,
                    approximate=True,
                )
                pipe.expire(key, FINISHED_TTL_SECONDS if event.is_terminal else IDLE_TTL_SECONDS)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (redis.RedisError, OSError) as exc:
                # Subscribers notice the gap and read the store; nothing a client needs is lost.
                logger.warning("could not publish events to Redis", error=str(exc), events=len(batch))
                continue
            for result in results:
                if isinstance(result, redis.ResponseError) and "equal or smaller" not in str(result):
                    logger.warning("Redis refused an event", error=str(result))

    # -- subscribing ---------------------------------------------------------------------------------

    def subscribe(self, execution_id: str, after: int = 0) -> _RedisSubscription:
        subscription = _RedisSubscription(self, execution_id, Mailbox(self.max_pending))
        if self._stopping:
            subscription.interrupt()
            return subscription
        reader = self._readers.get(execution_id)
        if reader is None:
            reader = self._readers[execution_id] = _Reader()
            reader.task = asyncio.create_task(self._read(execution_id, reader, after), name="redis-reader")
        reader.subscribers.add(subscription)
        return subscription

    def readable(self, execution_id: str) -> bool:
        reader = self._readers.get(execution_id)
        return reader is not None and reader.healthy

    def _unsubscribe(self, subscription: _RedisSubscription) -> None:
        reader = self._readers.get(subscription.key)
        if reader is None:
            return
        reader.subscribers.discard(subscription)
        if not reader.subscribers:
            del self._readers[subscription.key]
            if reader.task is not None:
                reader.task.cancel()

    async def _read(self, execution_id: str, reader: _Reader, after: int) -> None:
        """Reads the run's stream from ``after`` and hands every entry to this process's subscribers."""
        key = stream_key(execution_id)
        position: Any = f"{after}-0"
        while True:
            try:
                response = cast(
                    "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
                    await self.redis.xread({key: position}, count=READ_COUNT, block=READ_BLOCK_MS),
                )
            except (redis.RedisError, OSError) as exc:
                if reader.healthy:
                    logger.warning("cannot read live events from Redis; streams follow the store", error=str(exc))
                    reader.healthy = False
                    for subscriber in reader.subscribers:
                        subscriber.mailbox.wake()  # the stream now follows the store
                await asyncio.sleep(RETRY_SECONDS)
                continue
            reader.healthy = True
            for _key, entries in response or ():
                for entry_id, fields in entries:
                    position = entry_id
                    try:
                        event = _decode(entry_id, fields)
                    except (KeyError, ValueError) as exc:
                        logger.warning("skipped a malformed event in Redis", error=str(exc))
                        continue
                    for subscriber in reader.subscribers:
                        subscriber.mailbox.put(event)

    def subscriber_count(self) -> int:
        return sum(len(reader.subscribers) for reader in self._readers.values())

    # -- stopping ------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._stopping = True
        for reader in list(self._readers.values()):
            for subscriber in list(reader.subscribers):
                subscriber.interrupt()

    async def close(self) -> None:
        """Publishes what is queued, stops the readers and closes the connections."""
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher
        readers = [r.task for r in self._readers.values() if r.task is not None]
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        self._readers.clear()
        await self.redis.aclose()
