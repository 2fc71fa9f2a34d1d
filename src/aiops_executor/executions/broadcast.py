"""Live delivery of execution events to subscribers: in this process (``LocalBroadcaster``), or across processes
through Redis (``broadcast_redis.RedisBroadcaster``), behind one interface.

Only events already committed to the event store are published (``store.EventRecorder`` publishes after each
commit, in ``seq`` order), so a subscriber never sees an event a crash could take back. A reader that
subscribes first and then replays the store misses nothing: an event is either committed before the replay
reads it, or published after the subscription exists (see ``sse``). When the process stops, ``shutdown``
ends every subscription as *interrupted*, which tells the stream to ask its client to re-attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from aiops_executor.engine.events import TERMINAL_EVENTS


@dataclass(frozen=True)
class StreamEvent:
    """An event as clients see it: the SSE ``id`` (seq), ``event`` (type) and ``data`` (payload).

    A ``live`` event (a token delta) is never stored and has no SSE id: its ``seq`` is the stored event's it
    follows, which tells a stream whether it belongs after what the stream has sent.
    """

    seq: int
    type: str
    payload: dict[str, Any]
    live: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @cached_property
    def data_json(self) -> str:
        """The ``data:`` line's JSON, encoded once however many subscribers receive the event."""
        return json.dumps(self.payload, default=str)

    @cached_property
    def sse(self) -> bytes:
        """The whole SSE message, encoded once however many subscribers receive the event."""
        head = f"event: {self.type}\r\n" if self.live else f"id: {self.seq}\r\nevent: {self.type}\r\n"
        # JSON has no raw line break, so the data is one line.
        return f"{head}data: {self.data_json}\r\n\r\n".encode()


# How many events a subscriber may have waiting; one that falls further behind is cut off and re-attaches.
MAX_PENDING_EVENTS = 1000


class Mailbox:
    """A subscriber's waiting events, bounded: a slow subscriber costs bounded memory and never slows others."""

    def __init__(self, limit: int = MAX_PENDING_EVENTS) -> None:
        self.limit = limit
        self._events: deque[StreamEvent] = deque()
        self._wake = asyncio.Event()
        self.finished = False  # no event will be added; those waiting are still taken
        self.interrupted = False

    def put(self, event: StreamEvent) -> None:
        if self.interrupted or self.finished:
            return
        if len(self._events) >= self.limit:
            self.interrupt()  # the stream ends with the re-attach hint; its client comes back with Last-Event-ID
            return
        self._events.append(event)
        self._wake.set()

    def finish(self) -> None:
        self.finished = True
        self._wake.set()

    def interrupt(self) -> None:
        self.interrupted = True
        self._events.clear()
        self._wake.set()

    def wake(self) -> None:
        """Ends a waiting ``next`` without an event (its source changed)."""
        self._wake.set()

    @property
    def drained(self) -> bool:
        return self.finished and not self._events

    async def next(self, wait_seconds: float) -> StreamEvent | None:
        """The next event; None after ``wait_seconds`` without one, or at once when interrupted or finished
        meanwhile (a finished mailbox with nothing left still waits, for an interruption)."""
        if not self._events and not self.interrupted:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_seconds):
                    await self._wake.wait()
        if self.interrupted or not self._events:
            return None
        return self._events.popleft()


class Subscription(Protocol):
    async def next(self, wait_seconds: float) -> StreamEvent | None:
        """The next live event, or None after ``wait_seconds`` without one (at once when interrupted).

        A subscription that is ``closed`` (no live channel) still waits, for an interruption only.
        """

    @property
    def closed(self) -> bool:
        """No live event will come: the run's channel ended (every queued event taken), or none exists here."""

    @property
    def interrupted(self) -> bool:
        """Ended because the process is stopping, the subscriber fell too far behind, or ``interrupt`` was
        called: the client should re-attach."""

    def interrupt(self) -> None:
        """Ends this subscription as interrupted; a waiting ``next`` returns at once."""

    def close(self) -> None: ...


class Broadcaster(Protocol):
    def open(self, execution_id: str) -> None:
        """A run is about to start (or resume) here: subscribers from now on receive its events live."""

    def publish(self, execution_id: str, event: StreamEvent) -> None:
        """Delivers a *stored* event to the run's subscribers; called in ``seq`` order."""

    def finish(self, execution_id: str) -> None:
        """The run is over here and every event it published is stored: end its subscriptions."""

    def subscribe(self, execution_id: str, after: int = 0) -> Subscription:
        """Live events of the run from now on (a broadcaster may also deliver earlier ones after ``after``)."""

    def subscriber_count(self) -> int: ...

    def shutdown(self) -> None:
        """The process is stopping: every subscription, now and later, ends as interrupted."""

    async def close(self) -> None:
        """Delivers what is still queued and releases connections."""


@dataclass(eq=False)
class _LocalSubscription:
    owner: LocalBroadcaster
    channel: _Channel | None
    mailbox: Mailbox

    async def next(self, wait_seconds: float) -> StreamEvent | None:
        return await self.mailbox.next(wait_seconds)

    @property
    def closed(self) -> bool:
        return self.mailbox.drained or self.mailbox.interrupted

    @property
    def interrupted(self) -> bool:
        return self.mailbox.interrupted

    def interrupt(self) -> None:
        self.mailbox.interrupt()

    def close(self) -> None:
        if self.channel is not None:
            self.channel.subscribers.discard(self)
            self.channel = None
        self.owner._detached.discard(self)


@dataclass(eq=False)
class _Channel:
    subscribers: set[_LocalSubscription] = field(default_factory=set)


class LocalBroadcaster:
    """In-process fan-out: one channel per execution running here, any number of subscribers."""

    def __init__(self, *, max_pending: int = MAX_PENDING_EVENTS) -> None:
        self.max_pending = max_pending
        self._channels: dict[str, _Channel] = {}
        # Subscriptions with no channel (they follow the store); kept so that ``shutdown`` reaches them.
        self._detached: set[_LocalSubscription] = set()
        self._stopping = False

    def open(self, execution_id: str) -> None:
        self._channels.setdefault(execution_id, _Channel())

    def publish(self, execution_id: str, event: StreamEvent) -> None:
        channel = self._channels.get(execution_id)
        if channel is None:
            return  # nobody can be listening live: subscribers without a channel follow the store
        for subscriber in channel.subscribers:
            subscriber.mailbox.put(event)

    def finish(self, execution_id: str) -> None:
        channel = self._channels.pop(execution_id, None)
        if channel is None:
            return
        for subscriber in channel.subscribers:
            subscriber.mailbox.finish()
            subscriber.channel = None
            self._detached.add(subscriber)

    def subscribe(self, execution_id: str, after: int = 0) -> _LocalSubscription:
        channel = None if self._stopping else self._channels.get(execution_id)
        if channel is None:
            # Nothing runs under this id here: the store holds everything there is.
            subscription = _LocalSubscription(self, None, Mailbox(self.max_pending))
            subscription.mailbox.finish()
            self._detached.add(subscription)
            if self._stopping:
                subscription.interrupt()
            return subscription
        subscription = _LocalSubscription(self, channel, Mailbox(self.max_pending))
        channel.subscribers.add(subscription)
        return subscription

    def subscriber_count(self) -> int:
        return sum(len(c.subscribers) for c in self._channels.values())

    def shutdown(self) -> None:
        self._stopping = True
        for channel in self._channels.values():
            for subscriber in channel.subscribers:
                subscriber.interrupt()
        for subscriber in self._detached:
            subscriber.interrupt()

    async def close(self) -> None:
        """Nothing queued, nothing to release."""
