"""Token deltas are live only: coalesced per agent, never stored, placed after the stored event they follow (in
this process and through Redis), and a subscriber that falls too far behind is cut off to re-attach."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from aiops_executor.core.db import Database
from aiops_executor.engine.events import EventType, ExecutionEvent, PendingEvent
from aiops_executor.engine.tokens import TokenCoalescer
from aiops_executor.executions import broadcast_redis
from aiops_executor.executions.broadcast import LocalBroadcaster, StreamEvent
from aiops_executor.executions.broadcast_redis import RedisBroadcaster, stream_key
from aiops_executor.executions.event_log import EventRecorder
from aiops_executor.executions.sse import RECONNECT_MS
from tests.executions.test_event_store import (
    REDIS_URL,
    Run,
    db,
    drain,
    finish_as,
    seed_run,
    sse_fields,
    stored_seqs,
    stream_of,
)

__all__ = ["db"]  # the fixture, used by name


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def delta(text: str, agent: str = "a1") -> PendingEvent:
    return PendingEvent(EventType.agent_token, node_id="n1", agent_id=agent, data={"delta": text})


def test_deltas_are_coalesced_to_one_event_per_agent_per_interval() -> None:
    clock = Clock()
    tokens = TokenCoalescer(0.1, clock)
    assert tokens.wait_seconds() is None
    first = tokens.add(delta("The "))
    assert first is not None and first.data["delta"] == "The "  # after a quiet spell: at once
    assert tokens.add(delta("disk ")) is None and tokens.add(delta("is ")) is None  # held and joined
    assert tokens.add(delta("Other", agent="a2")) is not None  # each agent has its own interval
    clock.now += 0.04
    assert tokens.due() == [] and tokens.wait_seconds() == pytest.approx(0.06)
    clock.now += 0.06
    [joined] = tokens.due()
    assert joined.agent_id == "a1" and joined.data["delta"] == "disk is "
    assert tokens.wait_seconds() is None
    # Held deltas of a message that completed (or of a void model attempt) are dropped, not sent late.
    assert tokens.add(delta("full.")) is None
    tokens.drop("n1", "a1")
    clock.now += 1
    assert tokens.due() == [] and tokens.add(delta("Next")) is not None


def live(run: Run, seq: int, text: str) -> ExecutionEvent:
    """A token delta following stored event ``seq``."""
    return ExecutionEvent(
        EventType.agent_token,
        str(run.execution_id),
        str(run.team_id),
        seq,
        run.event(seq).timestamp,
        node_id="n1",
        agent_id="a1",
        data={"delta": text},
    )


def kinds(events: list[StreamEvent]) -> list[tuple[int, bool]]:
    return [(event.seq, event.live) for event in events]


async def test_deltas_are_published_in_the_runs_order_and_never_stored(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    broadcaster = LocalBroadcaster()
    broadcaster.open(run.key)
    subscription = broadcaster.subscribe(run.key)
    # A window long enough that stored events wait for their commit while deltas arrive.
    recorder = EventRecorder(db.sessionmaker, broadcaster, run.execution_id, flush_interval=0.2, batch_size=50)
    await recorder.add(run.event(1))
    await recorder.add(live(run, 1, "a"))  # behind event 1, which is not committed yet: it waits for it
    assert await drain(subscription) == []
    await recorder.flush()
    assert kinds(await drain(subscription)) == [(1, False), (1, True)]
    await recorder.add(live(run, 1, "b"))  # nothing stored waits: out at once
    assert kinds(await drain(subscription)) == [(1, True)]
    await recorder.add(run.event(2))
    await recorder.add(live(run, 2, "c"))
    await recorder.add(run.event(3, EventType.execution_complete))
    await recorder.close(finish_as(run))
    assert kinds(await drain(subscription)) == [(2, False), (2, True), (3, False)]
    assert await stored_seqs(db, run) == [1, 2, 3]


async def test_a_stream_sends_a_delta_after_the_event_it_follows_and_drops_a_stale_one(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    broadcaster = LocalBroadcaster()
    broadcaster.open(run.key)
    recorder = EventRecorder(db.sessionmaker, broadcaster, run.execution_id, flush_interval=0.001, batch_size=20)
    for seq in (1, 2):
        await recorder.add(run.event(seq))
    await recorder.flush()
    stream = stream_of(db, broadcaster, run)
    sent = [sse_fields(await anext(stream)), sse_fields(await anext(stream))]  # 1 and 2, from the store
    await recorder.add(live(run, 1, "stale"))  # follows event 1, but 2 was sent since: out of place
    await recorder.add(live(run, 2, "fresh"))
    await recorder.add(run.event(3, EventType.execution_complete))
    await recorder.close(finish_as(run))
    sent += [sse_fields(message) async for message in stream]
    assert [(m.get("id"), m["event"]) for m in sent] == [
        ("1", "agent_message"),
        ("2", "agent_message"),
        (None, "agent_token"),
        ("3", "execution_complete"),
    ]
    assert '"delta": "fresh"' in sent[2]["data"] and '"seq"' not in sent[2]["data"]


async def test_a_subscriber_that_falls_too_far_behind_is_cut_off_and_told_to_re_attach(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    broadcaster = LocalBroadcaster(max_pending=5)
    broadcaster.open(run.key)
    fast = broadcaster.subscribe(run.key)
    recorder = EventRecorder(db.sessionmaker, broadcaster, run.execution_id, flush_interval=0.001, batch_size=50)
    await recorder.add(run.event(1))
    await recorder.flush()
    slow = stream_of(db, broadcaster, run)
    assert sse_fields(await anext(slow))["id"] == "1"
    received = [event.seq for event in await drain(fast)]
    for seq in range(2, 12):  # the slow client reads nothing meanwhile
        await recorder.add(run.event(seq))
        await recorder.flush()
        received += [event.seq for event in await drain(fast)]
    # The slow one ends with the re-attach hint (its client comes back with Last-Event-ID: 1) ...
    rest = [sse_fields(message) async for message in slow]
    assert rest == [{"retry": str(RECONNECT_MS)}]  # the hint (and a comment), no event
    # ... and the one that kept up was never held back.
    assert received == list(range(1, 12))
    await recorder.add(run.event(12, EventType.execution_complete))
    await recorder.close(finish_as(run))


async def test_deltas_go_through_redis_after_the_event_they_follow() -> None:
    execution_id = str(uuid.uuid4())
    run = Run(uuid.UUID(execution_id), uuid.uuid4())
    publisher, reader = RedisBroadcaster(REDIS_URL), RedisBroadcaster(REDIS_URL)
    try:
        subscription = reader.subscribe(execution_id)
        events = [
            StreamEvent(1, "agent_message", run.event(1).payload()),
            StreamEvent(1, "agent_token", live(run, 1, "a").payload(), live=True),
            StreamEvent(1, "agent_token", live(run, 1, "b").payload(), live=True),
            StreamEvent(2, "agent_message", run.event(2).payload()),
            StreamEvent(2, "agent_token", live(run, 2, "c").payload(), live=True),
        ]
        for event in events:
            publisher.publish(execution_id, event)
        received = []
        while len(received) < len(events):
            event = await subscription.next(5)
            assert event is not None, "the stream stalled"
            received.append(event)
        assert kinds(received) == [(1, False), (1, True), (1, True), (2, False), (2, True)]
        assert [e.payload.get("delta") for e in received if e.live] == ["a", "b", "c"]
        entries = await publisher.redis.xrange(stream_key(execution_id))
        assert [entry_id.decode() for entry_id, _ in entries] == ["1-0", "1-1", "1-2", "2-0", "2-1"]
        # A reader starting after event 1 (a client re-attaching with Last-Event-ID: 1) reads what followed it.
        subscription.close()
        again = reader.subscribe(execution_id, after=1)
        later = [await again.next(5) for _ in range(4)]
        assert kinds([e for e in later if e is not None]) == [(1, True), (1, True), (2, False), (2, True)]
        again.close()
    finally:
        await publisher.redis.delete(stream_key(execution_id))
        await publisher.close()
        await reader.close()
        await asyncio.sleep(0)


async def test_one_redis_reader_follows_every_run_of_a_process_and_takes_new_ones_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A blocking read longer than the wait below: a stream added mid-read must cut it short, not wait it out.
    monkeypatch.setattr(broadcast_redis, "READ_BLOCK_MS", 9_000)
    runs = [Run(uuid.uuid4(), uuid.uuid4()) for _ in range(3)]
    publisher, reader = RedisBroadcaster(REDIS_URL), RedisBroadcaster(REDIS_URL)
    try:
        first = reader.subscribe(runs[0].key)
        publisher.publish(runs[0].key, StreamEvent(1, "agent_message", runs[0].event(1).payload()))
        assert (await first.next(5)) is not None
        task = reader._reader
        later = [reader.subscribe(run.key) for run in runs[1:]]  # while the reader blocks on the first stream
        for run in runs[1:]:
            publisher.publish(run.key, StreamEvent(1, "agent_message", run.event(1).payload()))
        for subscription in later:
            event = await subscription.next(5)
            assert event is not None and event.seq == 1
        assert reader._reader is task and not task.done()  # one reader for all of them
        assert reader.subscriber_count() == 3
        for subscription in (first, *later):
            subscription.close()
    finally:
        await publisher.redis.delete(*(stream_key(run.key) for run in runs))
        await publisher.close()
        await reader.close()
