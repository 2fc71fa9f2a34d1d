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
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from aiops_executor.engine.events import TERMINAL_EVENTS


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
    async def next(self, wait_seconds: float) -> StreamEvent | None:
        """The next live event, or None after ``wait_seconds`` without one (at once when interrupted).

        A subscription that is ``closed`` (no live channel) still waits, for an interruption only.
        """

    @property
    def closed(self) -> bool:
        """No live event will come: the run's channel ended (every queued event taken), or none exists here."""

    @property
    def interrupted(self) -> bool:
        """Ended because the process is stopping (or ``interrupt`` was called): the client should re-attach."""

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


@dataclass(frozen=True)
class _Signal:
    name: str


_FINISHED = _Signal("finished")
_INTERRUPTED = _Signal("interrupted")


@dataclass(eq=False)
class _LocalSubscription:
    owner: LocalBroadcaster
    channel: _Channel | None
    queue: asyncio.Queue[StreamEvent | _Signal] = field(default_factory=asyncio.Queue)
    _ended: bool = False
    _interrupted: bool = False

    async def next(self, wait_seconds: float) -> StreamEvent | None:
        if self._interrupted:
            return None
        try:
            item = await asyncio.wait_for(self.queue.get(), wait_seconds)
        except TimeoutError:
            return None
        if item is _FINISHED:
            self._ended = True
            return None
        if isinstance(item, _Signal):  # interrupted
            return None
        return item

    @property
    def closed(self) -> bool:
        return self._ended or self._interrupted

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        if not self._interrupted:
            self._interrupted = True
            self.queue.put_nowait(_INTERRUPTED)

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

    def __init__(self) -> None:
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
            subscriber.queue.put_nowait(event)

    def finish(self, execution_id: str) -> None:
        channel = self._channels.pop(execution_id, None)
        if channel is None:
            return
        for subscriber in channel.subscribers:
            subscriber.queue.put_nowait(_FINISHED)
            subscriber.channel = None
            self._detached.add(subscriber)

    def subscribe(self, execution_id: str, after: int = 0) -> _LocalSubscription:
        channel = None if self._stopping else self._channels.get(execution_id)
        if channel is None:
            # Nothing runs under this id here: the store holds everything there is.
            subscription = _LocalSubscription(self, None, _ended=True)
            self._detached.add(subscription)
            if self._stopping:
                subscription.interrupt()
            return subscription
        subscription = _LocalSubscription(self, channel)
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
