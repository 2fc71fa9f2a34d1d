"""Live events across processes: one Redis Stream per execution, whose entry ids are the events' ``seq``.

A worker publishes each event once it is committed (``store.EventRecorder``), as entry ``<seq>-0`` of
``aiops:execution:<id>:events``, and each live event (a token delta, never stored) as ``<seq>-<n>``, ``seq``
being the stored event's it follows, so that the stream keeps the run's order. Every API process reads the
streams its SSE clients follow with one reader -- a single blocking XREAD over all of them, cut short by an
entry on a wake stream of the process's own when a stream is added -- and fans each event out to its
subscribers. Because entry ids are ``seq``, a stream is read from exactly after a client's ``Last-Event-ID``
(live events after that event included), a run resumed on another worker continues the same stream, and a
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
import uuid
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


KEY_SUFFIX = ":events"


def stream_key(execution_id: str) -> str:
    return f"{KEY_PREFIX}{execution_id}{KEY_SUFFIX}"


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
class _Followed:
    """A stream this process reads: where the reader is in it, and who receives its entries."""

    position: Any  # the last entry id read
    subscribers: set[_RedisSubscription] = field(default_factory=set)


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
        self._followed: dict[str, _Followed] = {}
        self._reader: asyncio.Task[None] | None = None
        self._waking: set[asyncio.Task[None]] = set()
        self._healthy = True
        self._woken = False
        # A stream of this process only: an entry on it ends the reader's blocking read (a stream to add).
        self._wake_key = f"aiops:sse-reader:{uuid.uuid4().hex}:wake"
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
        followed = self._followed.get(execution_id)
        if followed is None:
            followed = self._followed[execution_id] = _Followed(f"{after}-0")
            self._start_reading()
        followed.subscribers.add(subscription)
        return subscription

    def readable(self, execution_id: str) -> bool:
        return self._healthy and execution_id in self._followed

    def _unsubscribe(self, subscription: _RedisSubscription) -> None:
        followed = self._followed.get(subscription.key)
        if followed is None:
            return
        followed.subscribers.discard(subscription)
        if not followed.subscribers:
            del self._followed[subscription.key]  # the reader leaves its stream out from its next read on

    def _start_reading(self) -> None:
        """Has the reader include a newly followed stream: started when there is none, woken otherwise (its
        blocking read is cut short by an entry on this process's wake stream)."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name="redis-reader")
            return
        waking = asyncio.create_task(self._wake_reader())
        self._waking.add(waking)
        waking.add_done_callback(self._waking.discard)

    async def _wake_reader(self) -> None:
        self._woken = True
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"wake": "1"}, maxlen=10, approximate=True)
            pipe.expire(self._wake_key, IDLE_TTL_SECONDS)
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:  # the reader comes round within one blocking read anyway
            logger.warning("could not wake the Redis reader", error=str(exc))

    async def _read(self) -> None:
        """One reader for every stream this process's SSE clients follow (a single blocking read over all of
        them), handing each entry to their subscribers; it ends when nothing is followed."""
        wake_position: Any = "0-0"
        while self._followed:
            streams: dict[Any, Any] = {stream_key(key): f.position for key, f in self._followed.items()}
            streams[self._wake_key] = wake_position
            try:
                response = cast(
                    "list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None",
                    await self.redis.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS),
                )
            except (redis.RedisError, OSError) as exc:
                if self._healthy:
                    logger.warning("cannot read live events from Redis; streams follow the store", error=str(exc))
                    self._healthy = False
                    for followed in self._followed.values():
                        for subscriber in followed.subscribers:
                            subscriber.mailbox.wake()  # the stream now follows the store
                await asyncio.sleep(RETRY_SECONDS)
                continue
            self._healthy = True
            for key, entries in response or ():
                name = key.decode() if isinstance(key, bytes) else key
                if name == self._wake_key:
                    wake_position = entries[-1][0] if entries else wake_position
                    continue
                reading = self._followed.get(name[len(KEY_PREFIX) : -len(KEY_SUFFIX)])
                if reading is None:
                    continue  # no longer followed here
                for entry_id, fields in entries:
                    reading.position = entry_id
                    try:
                        event = _decode(entry_id, fields)
                    except (KeyError, ValueError) as exc:
                        logger.warning("skipped a malformed event in Redis", error=str(exc))
                        continue
                    for subscriber in reading.subscribers:
                        subscriber.mailbox.put(event)

    def subscriber_count(self) -> int:
        return sum(len(followed.subscribers) for followed in self._followed.values())

    # -- stopping ------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self._stopping = True
        for followed in list(self._followed.values()):
            for subscriber in list(followed.subscribers):
                subscriber.interrupt()

    async def close(self) -> None:
        """Publishes what is queued, stops the reader and closes the connections."""
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher
        tasks = [task for task in (self._reader, *self._waking) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._followed.clear()
        if self._woken:  # the wake stream exists (it would expire anyway); a Redis that does not answer waits 1 s
            with contextlib.suppress(redis.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.redis.delete(self._wake_key)
        await self.redis.aclose()
