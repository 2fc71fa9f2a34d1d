"""The one owner of an execution's status: every transition of an ``executions`` row happens here.

    pending --start--> running --finish--> success | failed | timeout | cancelled
    pending --cancel_unrun--> cancelled (cancelled before any process took it)
                       running --release--> running, no worker (the process stopped; resumed later)
                       running --resume--> running, attempt + 1 (its process was lost)
                       running --give_up--> failed WORKER_LOST (lost more than AIOPS_MAX_RUN_ATTEMPTS times)
                       running --cancel_released--> cancelled (no process held it: it waited in the queue to be resumed)

The engine speaks ``RunStatus``; the API speaks ``ExecutionStatus``; ``FINAL_STATUS`` is the one mapping.
Each transition is one short transaction guarded by the status it expects, so two processes can never both
move a row (the loser sees ``None``).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.core.db import utcnow
from aiops_executor.engine import RunOutcome, RunStatus
from aiops_executor.engine.events import EventType, format_timestamp
from aiops_executor.executions.broadcast import StreamEvent
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus

WORKER_LOST = "WORKER_LOST"


class LeaseLost(Exception):
    """The run is no longer this process's: another worker took it over (this one missed its heartbeats for
    longer than the lease). Whatever this attempt still wanted to write is discarded."""


def _owned_by(execution_id: uuid.UUID, owner: str | None) -> list[Any]:
    conditions: list[Any] = [Execution.id == execution_id]
    if owner is not None:
        conditions.append(Execution.worker_id == owner)
    return conditions


async def _guarded(session: AsyncSession, statement: Any, execution_id: uuid.UUID, owner: str | None) -> int:
    result = cast("CursorResult[Any]", await session.execute(statement))
    changed = int(result.rowcount or 0)
    if owner is not None and changed == 0:
        raise LeaseLost(f"execution {execution_id} was taken over by another worker")
    return changed


FINAL_STATUS: dict[RunStatus, ExecutionStatus] = {
    RunStatus.success: ExecutionStatus.success,
    RunStatus.failed: ExecutionStatus.failed,
    RunStatus.timeout: ExecutionStatus.timeout,
    RunStatus.cancelled: ExecutionStatus.cancelled,
}


def this_worker() -> str:
    """``host:pid`` of this process, as ``worker_id`` shows it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_is_gone(worker_id: str | None) -> bool:
    """Whether the process named ``worker_id`` is certainly not running any more.

    Only a process on this host can be checked (a pid that no longer exists, or our own pid reused by this
    new process); a process on another host is presumed alive: taking over its runs is the job queue's
    lease, not a guess.
    """
    if worker_id is None:
        return True
    host, _, pid_text = worker_id.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Started:
    """What a process needs to run (or resume) an execution it has just taken."""

    execution: Execution
    attempt: int
    worker_id: str
    resumed: bool
    lost: bool  # resumed because the earlier attempt's process died (not because it stopped and handed it back)
    last_seq: int  # the last stored event; this attempt's events follow it
    elapsed_seconds: float  # running time of the earlier attempts (counts against the timeout)
    announced: dict[str, dict[str, Any]]  # node id -> result, of the node_complete events already stored


@dataclass(frozen=True)
class GaveUp:
    """``start`` found a run lost too many times and failed it (WORKER_LOST); its terminal event."""

    event: StreamEvent


def add_pending(session: AsyncSession, **columns: Any) -> Execution:
    """A new execution, ``pending`` until a process starts it (committed by the caller)."""
    execution = Execution(id=uuid.uuid4(), status=ExecutionStatus.pending.value, usage={}, attempt=1, **columns)
    session.add(execution)
    return execution


async def _last_event(session: AsyncSession, execution_id: uuid.UUID) -> tuple[int, datetime | None]:
    row = (
        await session.execute(
            select(func.max(ExecutionEventRow.seq), func.max(ExecutionEventRow.timestamp)).where(
                ExecutionEventRow.execution_id == execution_id
            )
        )
    ).one()
    return int(row[0] or 0), row[1]


async def _announced_nodes(session: AsyncSession, execution_id: uuid.UUID) -> dict[str, dict[str, Any]]:
    payloads = await session.scalars(
        select(ExecutionEventRow.payload).where(
            ExecutionEventRow.execution_id == execution_id,
            ExecutionEventRow.type == EventType.node_complete.value,
        )
    )
    return {p["node_id"]: p["result"] for p in payloads if p.get("node_id") and isinstance(p.get("result"), dict)}


async def start(
    sessionmaker: async_sessionmaker[AsyncSession],
    execution_id: uuid.UUID,
    worker_id: str,
    *,
    max_attempts: int,
    take_over: bool = False,
) -> Started | GaveUp | None:
    """pending -> running (attempt 1), or a lost running attempt -> running (attempt + 1); None when the run
    is not this process's to start (finished, or held by a live process); ``GaveUp`` when it was lost
    ``max_attempts`` times and has just failed with WORKER_LOST.

    ``take_over``: the caller holds the run's job in the queue, which only a dead worker loses, so the
    worker named in the row is gone whatever this host can tell about it.
    """
    async with sessionmaker() as session, session.begin():
        execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
        if execution is None or execution.status not in UNFINISHED:
            return None
        resumed = execution.status == ExecutionStatus.running.value
        if resumed and not take_over and not worker_is_gone(execution.worker_id):
            return None
        # A run suspended by a shutdown (no worker) was not lost: only lost attempts count.
        if resumed and execution.worker_id is not None and execution.attempt >= max_attempts:
            return GaveUp(await _give_up(session, execution, max_attempts))
        attempt = execution.attempt + 1 if resumed else 1
        now = utcnow()
        started_at = execution.started_at or now
        last_seq, last_at = await _last_event(session, execution_id)
        elapsed = (last_at - started_at).total_seconds() if resumed and last_at is not None else 0.0
        announced = await _announced_nodes(session, execution_id) if resumed else {}
        lost = resumed and execution.worker_id is not None  # read before this attempt names its own worker
        execution.status = ExecutionStatus.running.value
        execution.started_at = started_at
        execution.attempt = attempt
        execution.worker_id = worker_id
        return Started(execution, attempt, worker_id, resumed, lost, last_seq, max(0.0, elapsed), announced)


def outcome_columns(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "status": FINAL_STATUS[outcome.status].value,
        "completed_at": utcnow(),
        "duration_ms": outcome.duration_ms,
        "result": outcome.result(),
        "structured_output": outcome.structured_output,
        "usage": outcome.usage.as_dict(),
        "error_code": outcome.error_code,
        "error_message": outcome.error_message,
        "error_details": outcome.error_details or None,
        "worker_id": None,
    }


# The writes of a running attempt name their ``owner`` (its worker id): once another worker has taken the run
# over they match no row and raise ``LeaseLost``, so a process that only looked dead can never write over the
# attempt that replaced it (a fencing token).


async def finish(session: AsyncSession, execution_id: uuid.UUID, outcome: RunOutcome, owner: str | None = None) -> None:
    """running -> its final status, in the caller's transaction (the one writing the terminal event)."""
    statement = (
        update(Execution)
        .where(*_owned_by(execution_id, owner), Execution.status.in_(UNFINISHED))
        .values(**outcome_columns(outcome))
    )
    await _guarded(session, statement, execution_id, owner)


async def record_last_seq(session: AsyncSession, execution_id: uuid.UUID, seq: int, owner: str | None = None) -> None:
    """The last stored event (in the transaction that stores it)."""
    statement = update(Execution).where(*_owned_by(execution_id, owner)).values(last_seq=seq)
    await _guarded(session, statement, execution_id, owner)


async def release(session: AsyncSession, execution_id: uuid.UUID, owner: str | None = None) -> None:
    """The process is stopping: the run stays ``running`` with no worker, to be resumed from its checkpoint."""
    statement = (
        update(Execution)
        .where(*_owned_by(execution_id, owner), Execution.status == ExecutionStatus.running.value)
        .values(worker_id=None)
    )
    await _guarded(session, statement, execution_id, owner)


async def give_up(
    sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID, max_attempts: int
) -> StreamEvent | None:
    """A run lost ``max_attempts`` times fails with WORKER_LOST, with its terminal event after the last one."""
    async with sessionmaker() as session, session.begin():
        execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
        if execution is None or execution.status != ExecutionStatus.running.value:
            return None
        if not worker_is_gone(execution.worker_id):
            return None
        return await _give_up(session, execution, max_attempts)


async def _give_up(session: AsyncSession, execution: Execution, max_attempts: int) -> StreamEvent:
    message = (
        f"the process running this execution was lost {execution.attempt} times "
        f"(at most {max_attempts} attempts); it was not resumed again"
    )
    return await _end_unrun(
        session,
        execution,
        ExecutionStatus.failed,
        EventType.execution_error,
        {"status": ExecutionStatus.failed.value, "error_code": WORKER_LOST, "error_message": message},
        error_code=WORKER_LOST,
        error_message=message,
    )


async def cancel_unrun(sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID) -> StreamEvent | None:
    """pending -> cancelled, before any process started it; returns the terminal event (to publish). None when
    it is not pending any more (a process took it meanwhile: cancel the running run instead)."""
    return await _cancel_unrun(sessionmaker, execution_id, (ExecutionStatus.pending.value,))


async def cancel_released(
    sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID
) -> StreamEvent | None:
    """Cancels a ``running`` run whose job the caller has just cancelled in the queue (it waited there to be
    resumed, so no process runs it)."""
    return await _cancel_unrun(sessionmaker, execution_id, (ExecutionStatus.running.value,))


async def _cancel_unrun(
    sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID, expected: tuple[str, ...]
) -> StreamEvent | None:
    async with sessionmaker() as session, session.begin():
        execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
        if execution is None or execution.status not in expected:
            return None
        return await _end_unrun(
            session,
            execution,
            ExecutionStatus.cancelled,
            EventType.execution_cancelled,
            {"status": ExecutionStatus.cancelled.value},
            error_code=None,
            error_message=None,
        )


async def _end_unrun(
    session: AsyncSession,
    execution: Execution,
    status: ExecutionStatus,
    event: EventType,
    fields: dict[str, Any],
    *,
    error_code: str | None,
    error_message: str | None,
) -> StreamEvent:
    """Ends a run that no process is running, with its terminal event after the last stored one."""
    last_seq, _ = await _last_event(session, execution.id)
    now = utcnow()
    seq = last_seq + 1
    payload = {
        "execution_id": str(execution.id),
        "team_id": str(execution.team_id),
        "seq": seq,
        "timestamp": format_timestamp(now),
        **fields,
    }
    await session.execute(
        insert(ExecutionEventRow).values(
            execution_id=execution.id,
            seq=seq,
            type=event.value,
            payload=payload,
            timestamp=now,
            created_at=now,
            updated_at=now,
        )
    )
    execution.status = status.value
    execution.error_code = error_code
    execution.error_message = error_message
    execution.completed_at = now
    execution.last_seq = seq
    execution.worker_id = None
    execution.started_at = execution.started_at or now
    execution.duration_ms = int((now - execution.started_at).total_seconds() * 1000)
    return StreamEvent(seq, event.value, payload)


ORPHANED = text(
    """
    SELECT e.id FROM executions e
    WHERE (e.status = 'running' OR (e.status = 'pending' AND e.created_at < :pending_before))
      AND NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs j WHERE j.lock = CAST(e.id AS TEXT) AND j.status IN ('todo', 'doing')
      )
    ORDER BY e.created_at
    """
)


async def orphaned(sessionmaker: async_sessionmaker[AsyncSession], pending_before: datetime) -> list[uuid.UUID]:
    """Unfinished runs with no job in the queue (PostgreSQL): a process died between committing a run and
    enqueueing it (``pending`` rows older than ``pending_before``), or a run's job ended without its run."""
    async with sessionmaker() as session:
        rows = await session.execute(ORPHANED, {"pending_before": pending_before})
        return [uuid.UUID(str(row[0])) for row in rows]


async def unfinished(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Execution]:
    """Executions not yet finished, oldest first (at start-up: the ones to start or resume)."""
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(Execution).where(Execution.status.in_(UNFINISHED)).order_by(Execution.created_at)
        )
        return list(rows)
