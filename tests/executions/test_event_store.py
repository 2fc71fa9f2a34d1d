"""The event store's guarantee: an event reaches subscribers only once it is committed (SQLite and PostgreSQL).

Also: a failed write publishes nothing and loses nothing, group commit shares transactions, the SSE hand-over
neither loses nor repeats, and a stream ended by a shutdown tells its client to re-attach.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import ServerSentEvent

from aiops_executor.app import create_app
from aiops_executor.core.db import Database, utcnow
from aiops_executor.engine.events import EventType, ExecutionEvent
from aiops_executor.executions import repository
from aiops_executor.executions.broadcast import Broadcaster, LocalBroadcaster, StreamEvent, Subscription
from aiops_executor.executions.broadcast_redis import RedisBroadcaster
from aiops_executor.executions.event_log import EventRecorder, EventStoreUnavailable
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.sse import RECONNECT_MS, execution_stream, execution_stream_response
from aiops_executor.services import ServiceContext
from aiops_executor.teams.models import Team
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, make_settings
from tests.helpers import API

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@dataclass
class Run:
    execution_id: uuid.UUID
    team_id: uuid.UUID

    @property
    def key(self) -> str:
        return str(self.execution_id)

    def event(self, seq: int, kind: EventType = EventType.agent_message) -> ExecutionEvent:
        data = {"status": "success"} if kind is EventType.execution_complete else {"message": f"t{seq}"}
        return ExecutionEvent(kind, str(self.execution_id), str(self.team_id), seq, utcnow(), data=data)


async def seed_run(sessionmaker: Callable[[], AsyncSession], status: str = "running") -> Run:
    team_id, execution_id = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        session.add(
            Team(
                id=team_id,
                name=f"team-{team_id.hex[:8]}",
                timeout_seconds=60,
                max_iterations=5,
                topology={},
                node_count=1,
                agent_count=1,
                edge_count=0,
                depth=1,
            )
        )
        await session.flush()
        session.add(
            Execution(
                id=execution_id,
                team_id=team_id,
                status=status,
                input={"task": "t"},
                timeout_seconds=60,
                team_snapshot={},
                requested_by="test",
            )
        )
    return Run(execution_id, team_id)


def stream_of(
    db: Database, broadcaster: Broadcaster, run: Run, after: int = 0
) -> AsyncIterator[ServerSentEvent | bytes]:
    """The SSE stream of ``run``'s events after ``after``, as ``GET /executions/{id}/stream`` sends it."""
    context: Any = SimpleNamespace(
        settings=SimpleNamespace(sse_heartbeat_seconds=30.0, sse_idle_close_seconds=30.0), database=db
    )
    execution: Any = SimpleNamespace(id=run.execution_id, team_id=run.team_id)
    return execution_stream(context, broadcaster, execution, after)


def sse_fields(message: ServerSentEvent | bytes) -> dict[str, str]:
    """The fields of one SSE message as the stream sends it (stored and live events come encoded already)."""
    raw = message if isinstance(message, bytes) else message.encode()
    fields = {}
    for line in raw.decode().splitlines():
        name, _, value = line.partition(": ")
        if name:
            fields[name] = value
    return fields


async def stored_seqs(db: Database, run: Run) -> list[int]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(ExecutionEventRow.seq)
            .where(ExecutionEventRow.execution_id == run.execution_id)
            .order_by(ExecutionEventRow.seq)
        )
        return list(rows)


def finish_as(run: Run, status: str = "success") -> Callable[[AsyncSession], Any]:
    async def final(session: AsyncSession) -> None:
        await session.execute(
            update(Execution).where(Execution.id == run.execution_id).values(status=status, completed_at=utcnow())
        )

    return final


async def drain(subscription: Subscription) -> list[StreamEvent]:
    """Whatever is queued on the subscription now, without waiting."""
    events = []
    while (event := await subscription.next(0.001)) is not None:
        events.append(event)
    return events


class Sessions:
    """A sessionmaker that counts sessions (one per transaction) and can be made to fail."""

    def __init__(self, inner: Callable[[], AsyncSession]) -> None:
        self.inner = inner
        self.opened = 0
        self.down = False  # every session fails to open
        self.lose_after_commit = 0  # this many sessions commit, then report a lost connection

    def __call__(self) -> Any:
        self.opened += 1
        if self.down:
            raise OperationalError("BEGIN", {}, ConnectionRefusedError("the database is down"))
        if self.lose_after_commit:
            self.lose_after_commit -= 1
            return self._lost_after_commit()
        return self.inner()

    @asynccontextmanager
    async def _lost_after_commit(self) -> AsyncIterator[AsyncSession]:
        async with self.inner() as session:
            yield session
        raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost after the commit"))


# ------------------------------------------------------------------------------------------ stored first


async def test_every_event_a_subscriber_receives_is_already_stored(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    broadcaster = LocalBroadcaster()
    broadcaster.open(run.key)
    subscription = broadcaster.subscribe(run.key)
    # A wide window: an event published before its commit would be caught by the query below.
    recorder = EventRecorder(db.sessionmaker, broadcaster, run.execution_id, flush_interval=0.02, batch_size=25)
    total = 120

    async def produce() -> None:
        for seq in range(1, total):
            await recorder.add(run.event(seq))
            if seq % 7 == 0:
                await asyncio.sleep(0.003)
        await recorder.add(run.event(total, EventType.execution_complete))
        await recorder.close(finish_as(run))

    producer = asyncio.create_task(produce())
    received: list[int] = []
    while True:
        event = await subscription.next(5)
        assert event is not None, "the stream stalled"
        async with db.sessionmaker() as session:
            stored = await session.scalar(
                select(func.count())
                .select_from(ExecutionEventRow)
                .where(ExecutionEventRow.execution_id == run.execution_id, ExecutionEventRow.seq == event.seq)
            )
            execution = await session.get(Execution, run.execution_id)
        assert stored == 1, f"event {event.seq} reached a subscriber before it was stored"
        received.append(event.seq)
        if event.is_terminal:
            assert execution is not None and execution.status == "success"  # stored with the final state
            assert execution.last_seq == total
            break
    await producer
    assert received == list(range(1, total + 1))
    assert await subscription.next(0.01) is None and subscription.closed
    assert await stored_seqs(db, run) == list(range(1, total + 1))


async def test_a_failed_write_publishes_nothing_and_is_retried_until_stored(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    sessions = Sessions(db.sessionmaker)
    broadcaster = LocalBroadcaster()
    broadcaster.open(run.key)
    subscription = broadcaster.subscribe(run.key)
    recorder = EventRecorder(
        sessions, broadcaster, run.execution_id, flush_interval=0.001, batch_size=100, retry_delays=(0.005,)
    )

    sessions.down = True
    for seq in range(1, 11):
        await recorder.add(run.event(seq))  # does not wait for the database
    for _ in range(200):
        if sessions.opened >= 3:
            break
        await asyncio.sleep(0.005)
    assert sessions.opened >= 3, "the write is retried"
    assert await drain(subscription) == [] and await stored_seqs(db, run) == []

    sessions.down = False
    await recorder.flush()
    assert [e.seq for e in await drain(subscription)] == list(range(1, 11))
    assert await stored_seqs(db, run) == list(range(1, 11))

    # The commit goes through but its answer is lost: the retry must neither duplicate nor skip anything.
    sessions.lose_after_commit = 1
    for seq in range(11, 21):
        await recorder.add(run.event(seq))
    await recorder.flush()
    assert [e.seq for e in await drain(subscription)] == list(range(11, 21))

    # The end of the run fails once too, then goes through with its final state.
    await recorder.add(run.event(21))
    await recorder.add(run.event(22, EventType.execution_complete))
    sessions.lose_after_commit = 1
    await recorder.close(finish_as(run))
    assert [e.seq for e in await drain(subscription)] == [21, 22] and subscription.closed
    assert await stored_seqs(db, run) == list(range(1, 23))
    async with db.sessionmaker() as session:
        execution = await session.get(Execution, run.execution_id)
    assert execution is not None and execution.status == "success" and execution.last_seq == 22


async def test_close_raises_when_the_database_stays_down(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    sessions = Sessions(db.sessionmaker)
    broadcaster = LocalBroadcaster()
    broadcaster.open(run.key)
    subscription = broadcaster.subscribe(run.key)
    recorder = EventRecorder(
        sessions,
        broadcaster,
        run.execution_id,
        flush_interval=0.001,
        batch_size=5,
        retry_delays=(0.01,),
        retry_for=0.1,
    )
    sessions.down = True
    for seq in range(1, 4):
        await recorder.add(run.event(seq))
    await recorder.add(run.event(4, EventType.execution_complete))
    with pytest.raises(EventStoreUnavailable):
        await recorder.close(finish_as(run))
    # Nothing unstored was announced; live delivery ended, so the stream falls back to the store.
    assert await drain(subscription) == [] and subscription.closed
    assert await stored_seqs(db, run) == []


async def test_backpressure_holds_the_run_while_the_database_is_down(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    sessions = Sessions(db.sessionmaker)
    recorder = EventRecorder(
        sessions, LocalBroadcaster(), run.execution_id, flush_interval=0.001, batch_size=10, retry_delays=(0.005,)
    )
    sessions.down = True
    for seq in range(1, 10):
        await recorder.add(run.event(seq))
    blocked = asyncio.create_task(recorder.add(run.event(10)))  # the batch is full: add waits
    await asyncio.sleep(0.05)
    assert not blocked.done()
    sessions.down = False
    await asyncio.wait_for(blocked, 5)
    await recorder.close(finish_as(run))
    assert await stored_seqs(db, run) == list(range(1, 11))


async def test_group_commit_shares_transactions_and_keeps_order(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    sessions = Sessions(db.sessionmaker)
    broadcaster = LocalBroadcaster()
    broadcaster.open(run.key)
    subscription = broadcaster.subscribe(run.key)
    recorder = EventRecorder(sessions, broadcaster, run.execution_id, flush_interval=0.005, batch_size=200)

    loop = asyncio.get_running_loop()
    started = loop.time()
    for seq in range(1, 1001):
        await recorder.add(run.event(seq))
    await recorder.flush()
    assert loop.time() - started < 5
    assert sessions.opened <= 20, f"{sessions.opened} transactions for 1000 events"
    assert [e.seq for e in await drain(subscription)] == list(range(1, 1001))

    # A lone event is committed and delivered within a few milliseconds (generously bounded here).
    started = loop.time()
    await recorder.add(run.event(1001))
    assert (await subscription.next(2)) is not None
    assert loop.time() - started < 1
    await recorder.close(finish_as(run))
    assert await stored_seqs(db, run) == list(range(1, 1002))


# ------------------------------------------------------------------------------------------ hand-over


@pytest.fixture(params=["local", "redis"])
async def broadcaster(request: pytest.FixtureRequest) -> AsyncIterator[Broadcaster]:
    """In this process, or through the real Redis (as several processes share events)."""
    chosen: Broadcaster = LocalBroadcaster() if request.param == "local" else RedisBroadcaster(REDIS_URL)
    yield chosen
    chosen.shutdown()
    await chosen.close()


async def test_streams_attaching_at_any_moment_get_every_event_once(db: Database, broadcaster: Broadcaster) -> None:
    run = await seed_run(db.sessionmaker)
    broadcaster.open(run.key)
    recorder = EventRecorder(db.sessionmaker, broadcaster, run.execution_id, flush_interval=0.002, batch_size=20)
    total = 150
    rng = random.Random(7)

    async def follow(after: int) -> list[int]:
        seqs = []
        async for message in stream_of(db, broadcaster, run, after):
            fields = sse_fields(message)
            assert "id" in fields and fields["event"] != EventType.heartbeat.value
            seqs.append(int(fields["id"]))
        return seqs

    followers: list[tuple[int, asyncio.Task[list[int]]]] = []
    for seq in range(1, total):
        await recorder.add(run.event(seq))
        if seq % 10 == 0:
            after = rng.randint(0, seq)
            followers.append((after, asyncio.create_task(follow(after))))
        await asyncio.sleep(rng.choice((0, 0, 0.001, 0.003)))
    await recorder.add(run.event(total, EventType.execution_complete))
    await recorder.close(finish_as(run))
    followers.append((total - 5, asyncio.create_task(follow(total - 5))))  # after the end: the store only

    for after, task in followers:
        assert await asyncio.wait_for(task, 10) == list(range(after + 1, total + 1)), f"attached after {after}"
    assert broadcaster.subscriber_count() == 0


# ------------------------------------------------------------------------------------------ shutdown


@dataclass
class Served:
    url: str
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    headers: dict[str, str]

    @property
    def context(self) -> ServiceContext:
        context: ServiceContext = self.app.state.context
        return context


@asynccontextmanager
async def serve(database_url: str, data_dir: Path) -> AsyncIterator[Served]:
    app = create_app(make_settings(database_url, data_dir))

    @app.get("/test-stream/{execution_id}")
    async def test_stream(execution_id: uuid.UUID, request: Request) -> Any:
        context: ServiceContext = request.app.state.context
        async with context.database.sessionmaker() as session:
            execution = await session.get(Execution, execution_id)
        assert execution is not None
        return execution_stream_response(context, context.executions.broadcaster, execution, 0)

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    async with httpx.AsyncClient(base_url=url) as client:
        token = await client.post(f"{API}/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    try:
        yield Served(url, app, server, task, headers)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def store_event(served: Served, run: Run, seq: int) -> None:
    event = run.event(seq)
    async with served.context.database.sessionmaker() as session, session.begin():
        session.add(
            ExecutionEventRow(
                execution_id=run.execution_id,
                seq=seq,
                type=event.type.value,
                payload=event.payload(),
                timestamp=event.timestamp,
            )
        )


async def read_stream(client: httpx.AsyncClient, path: str, attached: asyncio.Event) -> list[str]:
    """The raw lines of an SSE response until the server ends it; ``attached`` is set at the first event."""
    lines = []
    async with client.stream("GET", path) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("id:"):
                attached.set()
    return lines


def ends_with_retry(lines: list[str]) -> bool:
    content = [line for line in lines if line]
    return content[-2:] == [": server restarting; reconnect with Last-Event-ID", f"retry: {RECONNECT_MS}"]


async def test_shutdown_ends_open_streams_with_a_retry_hint(database_url: str, tmp_path: Path) -> None:
    async with serve(database_url, tmp_path / "data") as served:
        broadcaster = served.context.executions.broadcaster
        live_run = await seed_run(served.context.database.sessionmaker)
        elsewhere = await seed_run(served.context.database.sessionmaker)  # running, but not in this process
        broadcaster.open(live_run.key)
        for run in (live_run, elsewhere):
            await store_event(served, run, 1)
        async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=10) as client:
            attached = [asyncio.Event(), asyncio.Event()]
            readers = [
                asyncio.create_task(read_stream(client, f"{API}/executions/{run.execution_id}/stream", ready))
                for run, ready in zip((live_run, elsewhere), attached, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(a.wait() for a in attached)), 5)
            assert broadcaster.subscriber_count() == 1
            broadcaster.shutdown()
            live_lines, elsewhere_lines = await asyncio.wait_for(asyncio.gather(*readers), 5)
        assert "id: 1" in live_lines and ends_with_retry(live_lines), live_lines
        assert "id: 1" in elsewhere_lines and ends_with_retry(elsewhere_lines), elsewhere_lines
        assert broadcaster.subscriber_count() == 0


async def test_server_shutdown_ends_open_streams_with_a_retry_hint(database_url: str, tmp_path: Path) -> None:
    async with serve(database_url, tmp_path / "data") as served:
        run = await seed_run(served.context.database.sessionmaker)
        served.context.executions.broadcaster.open(run.key)
        await store_event(served, run, 1)
        async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=10) as client:
            attached = asyncio.Event()
            reader = asyncio.create_task(read_stream(client, f"/test-stream/{run.execution_id}", attached))
            await asyncio.wait_for(attached.wait(), 5)
            # What SIGTERM does (without touching sse-starlette's process-wide flag); sse-starlette sees it.
            served.server.should_exit = True
            lines = await asyncio.wait_for(reader, 5)
        assert "id: 1" in lines and ends_with_retry(lines), lines


async def test_a_stream_fills_what_never_came_live_from_the_store(db: Database, broadcaster: Broadcaster) -> None:
    # Events 3-5 are committed but their publication is cut off (the worker died between commit and publish).
    run = await seed_run(db.sessionmaker)
    broadcaster.open(run.key)
    recorder = EventRecorder(db.sessionmaker, broadcaster, run.execution_id, flush_interval=0.001, batch_size=20)

    async def follow() -> list[int]:
        messages = [sse_fields(m) async for m in stream_of(db, broadcaster, run)]
        return [int(m["id"]) for m in messages if "id" in m]

    await recorder.add(run.event(1))
    await recorder.add(run.event(2))
    await recorder.flush()
    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)  # attached and caught up
    publish = broadcaster.publish
    broadcaster.publish = lambda key, event: None if 3 <= event.seq <= 5 else publish(key, event)  # type: ignore[method-assign]
    for seq in range(3, 8):
        await recorder.add(run.event(seq))
    await recorder.add(run.event(8, EventType.execution_complete))
    await recorder.close(finish_as(run))
    assert await asyncio.wait_for(follower, 10) == list(range(1, 9))


async def test_an_attempt_taken_over_by_another_worker_writes_nothing_more(db: Database) -> None:
    run = await seed_run(db.sessionmaker)
    async with db.sessionmaker() as session, session.begin():
        await session.execute(update(Execution).where(Execution.id == run.execution_id).values(worker_id="host:2"))
    # This attempt belonged to host:1, which missed its heartbeats; host:2 runs the execution now.
    recorder = EventRecorder(
        db.sessionmaker, LocalBroadcaster(), run.execution_id, flush_interval=0.001, batch_size=20, owner="host:1"
    )
    await recorder.add(run.event(1))
    with pytest.raises(EventStoreUnavailable) as raised:
        await asyncio.wait_for(recorder.flush(), 5)  # at once: retrying cannot give the run back
    assert isinstance(raised.value.__cause__, repository.LeaseLost)
    assert await stored_seqs(db, run) == []
    async with db.sessionmaker() as session, session.begin():
        with pytest.raises(repository.LeaseLost):
            await repository.release(session, run.execution_id, "host:1")
    async with db.sessionmaker() as session:
        row = await session.get(Execution, run.execution_id)
        assert row is not None and row.worker_id == "host:2" and row.status == "running"
