"""Live delivery of execution events to subscribers, behind an interface a Redis-backed version can implement.

Every published event is kept in the channel's *tail* until the event store confirms it is persisted.
``subscribe`` returns the tail and a live queue taken at the same instant, so a reader that replays the
store, then the tail, then the queue sees every event exactly once (it skips sequence numbers it already
has): an event persisted after the store was read is still in the tail, and one published after
subscribing is in the queue.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from aiops_executor.engine.events import TERMINAL_EVENTS, EventType


@dataclass(frozen=True)
class StreamEvent:
    """An event as clients see it: the SSE ``id`` (seq), ``event`` (type) and ``data`` (payload)."""

    seq: int
    type: str
    payload: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    @cached_property
    def data_json(self) -> str:
        """The ``data:`` line's JSON, encoded once however many subscribers receive the event."""
        return json.dumps(self.payload, default=str)


class Subscription(Protocol):
    backlog: list[StreamEvent]

    async def next(self, wait_seconds: float) -> StreamEvent | None:
        """The next live event, or None after ``wait_seconds`` without one."""

    @property
    def closed(self) -> bool:
        """The channel ended (the run finished) and every queued event was taken."""

    def close(self) -> None: ...


class Broadcaster(Protocol):
    def open(self, execution_id: str) -> None:
        """A run is about to start: subscribers from now on wait for its events."""

    def publish(self, execution_id: str, event: StreamEvent) -> None: ...

    def persisted(self, execution_id: str, seq: int) -> None:
        """Events up to ``seq`` are in the store; they can leave the tail."""

    def finish(self, execution_id: str) -> None:
        """The run is over and every event is persisted: end its subscriptions."""

    def subscribe(self, execution_id: str) -> Subscription: ...

    def subscriber_count(self) -> int: ...


_CLOSED = StreamEvent(0, EventType.heartbeat, {})


@dataclass
class _LocalSubscription:
    channel: _Channel | None
    backlog: list[StreamEvent]
    queue: asyncio.Queue[StreamEvent] = field(default_factory=asyncio.Queue)
    _ended: bool = False

    async def next(self, wait_seconds: float) -> StreamEvent | None:
        if self._ended:
            return None
        try:
            event = await asyncio.wait_for(self.queue.get(), wait_seconds)
        except TimeoutError:
            return None
        if event is _CLOSED:
            self._ended = True
            return None
        return event

    @property
    def closed(self) -> bool:
        return self._ended or self.channel is None

    def close(self) -> None:
        if self.channel is not None:
            self.channel.subscribers.discard(self)
            self.channel = None

    def __hash__(self) -> int:
        return id(self)


@dataclass
class _Channel:
    tail: deque[StreamEvent] = field(default_factory=deque)
    subscribers: set[_LocalSubscription] = field(default_factory=set)


class LocalBroadcaster:
    """In-process fan-out: one channel per running execution, any number of subscribers."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}

    def open(self, execution_id: str) -> None:
        self._channels.setdefault(execution_id, _Channel())

    def publish(self, execution_id: str, event: StreamEvent) -> None:
        channel = self._channels.setdefault(execution_id, _Channel())
        channel.tail.append(event)
        for subscriber in channel.subscribers:
            subscriber.queue.put_nowait(event)

    def persisted(self, execution_id: str, seq: int) -> None:
        channel = self._channels.get(execution_id)
        if channel is None:
            return
        while channel.tail and channel.tail[0].seq <= seq:
            channel.tail.popleft()

    def finish(self, execution_id: str) -> None:
        channel = self._channels.pop(execution_id, None)
        if channel is None:
            return
        for subscriber in channel.subscribers:
            subscriber.queue.put_nowait(_CLOSED)
            subscriber.channel = None

    def subscribe(self, execution_id: str) -> _LocalSubscription:
        channel = self._channels.get(execution_id)
        if channel is None:
            # Nothing is running under this id here: the store holds everything there is.
            return _LocalSubscription(None, [], _ended=True)
        subscription = _LocalSubscription(channel, list(channel.tail))
        channel.subscribers.add(subscription)
        return subscription

    def subscriber_count(self) -> int:
        return sum(len(c.subscribers) for c in self._channels.values())
