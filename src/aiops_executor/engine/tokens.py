"""Token deltas coalesced into live events: at most one ``agent_token`` per agent per interval.

A model streams a delta per token, dozens a second; a person reading along needs a few updates a second, and
every event costs each subscriber a write. An agent's first delta after a quiet interval goes out at once; the
ones that follow within the interval are joined and go out when it has passed. What is still held when the
agent's ``agent_message`` comes is dropped (the message has the text), and so is what a failed model attempt
streamed (``agent_tokens_discarded``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiops_executor.engine.events import EventType, PendingEvent

DEFAULT_INTERVAL_SECONDS = 0.1

_Key = tuple[str | None, str | None]  # (node_id, agent_id)


@dataclass
class _Held:
    node_id: str | None
    agent_id: str | None
    due: float
    parts: list[str] = field(default_factory=list)


class TokenCoalescer:
    def __init__(self, interval: float = DEFAULT_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last_sent: dict[_Key, float] = {}
        self._held: dict[_Key, _Held] = {}

    def add(self, event: PendingEvent) -> PendingEvent | None:
        """A delta: the event to send now, or None when it is held (joined with the next ones)."""
        key = (event.node_id, event.agent_id)
        delta = str(event.data.get("delta", ""))
        held = self._held.get(key)
        if held is not None:
            held.parts.append(delta)
            return None
        now = self._clock()
        last = self._last_sent.get(key)
        if last is None or now - last >= self.interval:
            self._last_sent[key] = now
            return event
        self._held[key] = _Held(event.node_id, event.agent_id, last + self.interval, [delta])
        return None

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def drop(self, node_id: str | None, agent_id: str | None) -> None:
        """Forgets what the agent's deltas held (its message is complete, or its model attempt was void)."""
        self._held.pop((node_id, agent_id), None)

    def wait_seconds(self) -> float | None:
        """How long until held deltas are due (None: nothing is held)."""
        if not self._held:
            return None
        return max(0.0, min(held.due for held in self._held.values()) - self._clock())

    def due(self) -> list[PendingEvent]:
        """The held deltas whose interval has passed, one event per agent."""
        if not self._held:
            return []
        now = self._clock()
        ready = [key for key, held in self._held.items() if held.due <= now]
        events = []
        for key in ready:
            held = self._held.pop(key)
            self._last_sent[key] = now
            events.append(
                PendingEvent(
                    EventType.agent_token,
                    node_id=held.node_id,
                    agent_id=held.agent_id,
                    data={"delta": "".join(held.parts)},
                )
            )
        return events
